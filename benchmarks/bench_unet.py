"""Repair-UNet forward speed: SDPA attention against the original einsum attention, same run.

CPU (always): the tiny fixture-size UNet (2.6 M parameters, random weights), batch 2 (one
guided step: conditional + unconditional), 16 frames. CUDA (when present): the full-size
network (1.44 B parameters, random weights; speed does not depend on the values) at 320x512 and
512x960, bf16 + SDPA against fp32 + einsum, with peak memory; a 25-step DDIM run with guidance
is about 25 such forwards.

    .venv/bin/python benchmarks/bench_unet.py            # -> benchmarks/results/unet.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from genfusion.generation.attention import set_reference_attention
from genfusion.generation.unet import FULL_UNET_CONFIG, RepairUNet3DModel

TINY_CONFIG = dict(
    FULL_UNET_CONFIG,
    model_channels=32,
    attention_resolutions=[2, 1],
    channel_mult=[1, 1, 2],
    num_head_channels=16,
    context_dim=48,
)


def _time_forward(model, inputs, repeats: int, sync) -> float:
    with torch.no_grad():
        model(*inputs)  # warm-up
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(*inputs)
            sync()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inputs(config: dict, batch: int, frames: int, h: int, w: int, device, dtype):
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(batch, config["in_channels"], frames, h, w, generator=gen)
    context = torch.randn(batch, 256, config["context_dim"], generator=gen)
    t = torch.full((batch,), 601)
    return sample.to(device, dtype), t.to(device), context.to(device, dtype)


def bench_cpu(repeats: int) -> dict:
    torch.manual_seed(0)
    model = RepairUNet3DModel(**TINY_CONFIG).eval()
    rows = []
    for h, w in [(8, 8), (32, 32)]:
        inputs = _inputs(TINY_CONFIG, 2, 16, h, w, "cpu", torch.float32)
        sdpa = _time_forward(model, inputs, repeats, lambda: None)
        set_reference_attention(model, True)
        einsum = _time_forward(model, inputs, repeats, lambda: None)
        set_reference_attention(model, False)
        rows.append(
            {
                "latent_hw": [h, w],
                "sdpa_s": round(sdpa, 4),
                "einsum_s": round(einsum, 4),
                "speedup_sdpa_vs_einsum": round(einsum / sdpa, 3),
            }
        )
    return {"model": "tiny (2.6 M params, random)", "batch": 2, "frames": 16, "rows": rows}


def bench_cuda(repeats: int) -> dict:
    device = torch.device("cuda")
    sync = torch.cuda.synchronize
    rows = []
    for h, w in [(40, 64), (64, 120)]:
        row = {"latent_hw": [h, w], "pixels_hw": [8 * h, 8 * w]}
        for name, dtype, reference in [
            ("bf16_sdpa", torch.bfloat16, False),
            ("fp32_einsum", torch.float32, True),
        ]:
            torch.manual_seed(0)
            model = RepairUNet3DModel(**FULL_UNET_CONFIG).to(device, dtype).eval()
            set_reference_attention(model, reference)
            inputs = _inputs(FULL_UNET_CONFIG, 2, 16, h, w, device, dtype)
            torch.cuda.reset_peak_memory_stats()
            try:
                seconds = _time_forward(model, inputs, repeats, sync)
                row[f"{name}_s"] = round(seconds, 4)
                row[f"{name}_25_steps_s"] = round(25 * seconds, 2)
                row[f"{name}_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            except torch.cuda.OutOfMemoryError:
                row[f"{name}_s"] = "out of memory"
            del model
            torch.cuda.empty_cache()
        if isinstance(row.get("fp32_einsum_s"), float):
            row["speedup"] = round(row["fp32_einsum_s"] / row["bf16_sdpa_s"], 2)
        rows.append(row)
    return {"model": "full size (1.44 B params, random)", "batch": 2, "frames": 16, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    # 1 thread by default: on a shared, overloaded 2-core machine two OpenMP threads made the tiny
    # forward ~60x slower (spin-waiting), which would measure the neighbours, not the model
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "unet.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
        },
        "cpu": bench_cpu(args.repeats),
    }
    if torch.cuda.is_available():
        result["cuda"] = bench_cuda(args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
