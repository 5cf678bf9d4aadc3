"""Reconstruction quality of the defaults against a fixed textbook schedule -> results/quality.json.

What it measures: for real captures, whether ``ReconstructConfig``'s automatic schedule
(densification window, opacity resets, SH ramp, method-dependent pruning; see
``genfusion/splat/config.py``) is at least as good as the fixed schedule of the 3DGS paper, the
control. Each *case* is one scene x resolution x method x length, trained twice on CPU with the
same seed (0) and split (``holdout8``: every 8th view held out):

- ``default``: a ``ReconstructConfig`` with only method, iterations, downscale, device=cpu and
  checkpoint_every=0 set; everything else, the schedule included, is the current default.
- ``control``: the same plus the textbook schedule given explicitly (explicit steps are used as
  given, never scaled): densify every 100 steps from step 300 to the mid-point inclusive
  (refine_every=100, refine_start=300, refine_stop=iterations // 2 + 1), prune below opacity 0.005,
  reset opacities every 3,000 steps while densifying (reset_every=3000, reset_recovery=0) and one
  more SH band every 1,000 steps (sh_degree_interval=1000).

Cases: scenes ``fox`` (``assets/demo/fox``, 67 photos at 270x480, transforms.json, no sparse
points: random init) and ``fern`` (``$GENFUSION_SHARED/data/fern``, default ``../shared/data/fern``;
LLFF, 20 photos, random init), each at two resolutions given as downscale factors (``low`` /
``high``; fox 8 and 4 -> 34x60 and 68x120, fern 64 and 32 -> 63x47 and 126x94), methods 3dgs and
2dgs, lengths 1,000 and 7,000 iterations: 16 cases, 32 runs.

Per run the JSON records the mean PSNR and SSIM over the held-out views, the wall time of
training (and its CPU time), the final Gaussian count, the iterations done, the resolution, the
torch threads, the resolved schedule, the full config, the git commit and a hash of the code.
Per case: ``delta_psnr`` = default - control and ``ok`` = the default is no worse than the
control by more than 0.2 dB (``ok`` is null while a run is missing or truncated).

Each run trains in its own subprocess (``bench_quality.py --one '<json spec>'``, which prints one
``RESULT {json}`` line), so its memory is returned and runs can go in parallel (``--jobs``). Every
finished run is merged into the results file at once (temp file + ``os.replace``), so an
interrupted benchmark resumes where it stopped. A cached run is reused only when its config
equals the one that would run now and the source of every ``genfusion`` module it imported is
unchanged (``code_hash`` over ``code_files``; the git commit, ``git rev-parse --short HEAD`` plus
``+dirty`` when ``genfusion/`` has uncommitted changes, is recorded for people, but a commit that
touches other files does not invalidate hours of runs). ``--rerun`` ignores the cache.

``--time-limit S`` stops a run's training after S seconds (``trainer.train(stop_check=...)``); the
run is then recorded with ``truncated: true`` and its table row says so, so it is never taken for
a full run (a truncated run is rerun when the limit is raised or dropped). Smoke tests:
``--iterations-override N`` trains every selected case for N steps instead (recorded as
``iterations_override``) and needs ``--out`` elsewhere, so the real results file only holds real
runs.

Run the whole benchmark (CPU, hours at 7,000 iterations; resumable) and print the table::

    python benchmarks/bench_quality.py --jobs 2          # 2 runs at a time, 1 torch thread each
    python benchmarks/bench_quality.py --table           # print the markdown table (no training)
    python benchmarks/bench_quality.py --write-readme    # put it between the README markers

Filters (for running and for the table): ``--scenes fox fern --lengths 1000 7000 --methods 3dgs
2dgs --resolutions low high --variants default control``. ``--dry-run`` lists what would run and
why. A smoke test: ``python benchmarks/bench_quality.py --scenes fox --lengths 1000 --methods 3dgs
--resolutions low --iterations-override 40 --out /tmp/quality_smoke.json``.

The cases (grid, keys, each variant's config fields) are in ``quality_cases.py``, the markdown table
and ``--write-readme`` in ``quality_tables.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.quality_cases import (  # noqa: E402
    DOWNSCALES,
    LENGTHS,
    METHODS,
    RESOLUTIONS,
    SCENES,
    TOLERANCE_DB,
    VARIANTS,
    config_values,
    run_key,
)
from benchmarks.quality_tables import MARK_END, MARK_START, README, table, write_readme  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "quality.json"
RESULT_PREFIX = "RESULT "


# ------------------------------------------------------------------------------------ configs


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run specs of the selected cases, cheapest (shortest) first, default and control adjacent."""
    from genfusion.splat.config import ReconstructConfig

    downscales = {"fox": tuple(args.fox_downscale), "fern": tuple(args.fern_downscale)}
    paths = {"fox": args.fox, "fern": args.fern}
    specs = []
    for length in args.lengths:
        for scene in args.scenes:
            for resolution in args.resolutions:
                downscale = downscales[scene][RESOLUTIONS.index(resolution)]
                for method in args.methods:
                    for variant in args.variants:
                        iterations = args.iterations_override or length
                        config = ReconstructConfig(**config_values(method, iterations, downscale, variant))
                        specs.append(
                            {
                                "key": run_key(scene, resolution, method, length, variant),
                                "scene": scene,
                                "scene_path": str(paths[scene]),
                                "resolution": resolution,
                                "downscale": downscale,
                                "method": method,
                                "length": length,
                                "variant": variant,
                                "iterations_override": args.iterations_override,
                                "time_limit_s": args.time_limit,
                                "threads": args.threads,
                                "config": json.loads(json.dumps(config.to_dict())),
                            }
                        )
    return specs


# ---------------------------------------------------------------------------------- code state


def git_commit() -> str:
    """``git rev-parse --short HEAD``, plus ``+dirty`` when genfusion/ has uncommitted changes."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", *argv], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "genfusion") else "")


def loaded_code_files() -> list[str]:
    """Repository-relative paths of every genfusion module imported by this process."""
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and module.__name__.split(".")[0] == "genfusion":
            try:
                files.add(Path(path).resolve().relative_to(REPO).as_posix())
            except ValueError:  # an installed copy outside the repository
                files.add(str(Path(path).resolve()))
    return sorted(files)


def code_hash(files: list[str]) -> str | None:
    """sha256 over the paths and contents of ``files`` (None when one of them is gone)."""
    digest = hashlib.sha256()
    for name in files:
        path = REPO / name
        if not path.is_file():
            return None
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------- one run


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one run in this process; the record stored in the results file."""
    import torch

    import genfusion.errors
    from genfusion.data import load_scene
    from genfusion.splat.config import ReconstructConfig
    from genfusion.splat.trainer import Trainer

    torch.set_num_threads(int(spec["threads"]))
    key = spec["key"]
    commit = git_commit()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    config = ReconstructConfig.from_dict(spec["config"])
    # resized photos are cached outside the scene folder (the bundled demo scene stays as shipped)
    cache = Path(tempfile.gettempdir()) / "genfusion-bench-cache" / Path(spec["scene_path"]).name
    scene = load_scene(spec["scene_path"], downscale=config.downscale, cache_dir=cache)

    last_report = [time.perf_counter(), 0]
    every = max(1, config.iterations // 10)

    def progress(event) -> None:  # a line on stderr every 10% of the run or 5 minutes
        now = time.perf_counter()
        if event.stage != "reconstruct" or event.step == last_report[1]:
            return
        if event.step % every == 0 or now - last_report[0] > 300 or event.step == config.iterations:
            last_report[:] = [now, event.step]
            metrics = event.metrics
            print(
                f"[{key}] step {event.step}/{config.iterations} train psnr {metrics.get('psnr', 0):.2f} "
                f"gaussians {int(metrics.get('num_gaussians', 0))}",
                file=sys.stderr,
                flush=True,
            )

    trainer = Trainer(scene, config, progress=progress)
    initial = trainer.num_gaussians
    limit = spec.get("time_limit_s")
    start, cpu_start = time.perf_counter(), time.process_time()
    over_time = None if limit is None else (lambda: time.perf_counter() - start > limit)
    try:
        trainer.train(stop_check=over_time)
    except Exception as error:  # newer trainers raise Cancelled when stop_check() says stop
        cancelled = getattr(genfusion.errors, "Cancelled", None)
        if over_time is None or cancelled is None or not isinstance(error, cancelled):
            raise
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    eval_start = time.perf_counter()
    evaluation = trainer.evaluate(keep_renders=False)
    eval_seconds = time.perf_counter() - eval_start
    width, height = trainer.train_views.sizes[0]
    files = loaded_code_files()
    return {
        "key": key,
        "scene": spec["scene"],
        "scene_path": spec["scene_path"],
        "resolution": spec["resolution"],
        "downscale": config.downscale,
        "size": [width, height],
        "method": config.method,
        "length": spec["length"],
        "variant": spec["variant"],
        "iterations": config.iterations,
        "iterations_done": trainer.step,
        "iterations_override": spec.get("iterations_override"),
        "truncated": trainer.step < config.iterations,
        "time_limit_s": limit,
        "psnr": evaluation.mean("psnr"),
        "ssim": evaluation.mean("ssim"),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "num_gaussians": trainer.num_gaussians,
        "initial_gaussians": initial,
        "init_note": trainer.init_note,
        "train_views": len(trainer.train_views),
        "test_views": len(trainer.test_views),
        "threads": torch.get_num_threads(),
        "schedule": json.loads(json.dumps(dataclasses.asdict(trainer.schedule))),
        "config": json.loads(json.dumps(config.to_dict())),
        "commit": commit,
        "code_hash": code_hash(files),
        "code_files": files,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": load_start,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ------------------------------------------------------------------------------ results file


def read_results(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"runs": {}}
    results = json.loads(path.read_text())  # written atomically: a broken file is worth an error
    results.setdefault("runs", {})
    return results


def case_summaries(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per case (key without the variant): delta = default - control PSNR and ok."""
    cases: dict[str, dict[str, Any]] = {}
    for key in sorted(runs):
        case = key.rsplit("/", 1)[0]
        if case in cases:
            continue
        default, control = runs.get(f"{case}/default"), runs.get(f"{case}/control")
        delta = ok = None
        if default and control and default["psnr"] is not None and control["psnr"] is not None:
            delta = round(default["psnr"] - control["psnr"], 3)
            if not (default["truncated"] or control["truncated"]):
                ok = delta >= -TOLERANCE_DB - 1e-9
        cases[case] = {
            "delta_psnr": delta,
            "ok": ok,
            "truncated": bool((default or {}).get("truncated") or (control or {}).get("truncated")),
            "tolerance_db": TOLERANCE_DB,
        }
    return cases


_write_lock = threading.Lock()


def merge_record(path: Path, record: dict[str, Any]) -> None:
    """Add one finished run to the results file (re-read first; temp file + os.replace)."""
    with _write_lock:
        results = read_results(path)
        results["runs"][record["key"]] = record
        results["runs"] = dict(sorted(results["runs"].items()))
        results["cases"] = case_summaries(results["runs"])
        results["note"] = (
            "bench_quality.py: defaults vs the textbook 3DGS schedule; CPU, seed 0, holdout8. Timings "
            "from a shared 2-core machine are noisy; compare default and control of one case."
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        os.replace(tmp, path)


def stale_reason(record: dict[str, Any] | None, spec: dict[str, Any]) -> str | None:
    """Why the cached ``record`` cannot stand for ``spec`` (None: reuse it)."""
    if record is None:
        return "not run"
    if record.get("config") != spec["config"]:
        changed = sorted(
            k
            for k in set(record.get("config", {})) | set(spec["config"])
            if record.get("config", {}).get(k) != spec["config"].get(k)
        )
        return f"config differs ({', '.join(changed)})"
    if record.get("iterations_override") != spec["iterations_override"]:
        return "iterations override differs"
    files = record.get("code_files") or []
    if not files or code_hash(files) != record.get("code_hash"):
        return f"code changed since {record.get('commit', '?')}"
    if record.get("truncated"):
        limit, was = spec["time_limit_s"], record.get("time_limit_s")
        if limit is None or was is None or limit > was:
            return f"truncated at {record['iterations_done']} steps by --time-limit {was}"
    return None


# ---------------------------------------------------------------------------------- running


def run_subprocess(spec: dict[str, Any], stop: threading.Event, procs: set) -> dict[str, Any]:
    """``bench_quality.py --one spec`` in a fresh process; its record (stderr passes through)."""
    if stop.is_set():
        raise RuntimeError("not started: interrupted")
    threads = str(spec["threads"])
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    procs.add(proc)
    try:
        stdout, _ = proc.communicate()
    finally:
        procs.discard(proc)
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(stdout.splitlines()[-5:])
        raise RuntimeError(f"exit status {proc.returncode}{': ' + tail if tail else ''}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def run_benchmark(specs: list[dict[str, Any]], args: argparse.Namespace) -> int:
    """Run the specs that have no valid cached record; returns the number that failed."""
    cached = read_results(args.out)["runs"]
    todo = []
    for spec in specs:
        reason = "--rerun" if args.rerun else stale_reason(cached.get(spec["key"]), spec)
        print(f"{spec['key']}: {'cached' if reason is None else 'run (' + reason + ')'}", flush=True)
        if reason is not None:
            todo.append(spec)
    if args.dry_run or not todo:
        return 0
    print(f"{len(todo)} runs, {args.jobs} at a time, {args.threads} torch threads each -> {args.out}")
    stop, procs, failed = threading.Event(), set(), 0

    def on_term(signum, frame):  # a SIGTERM ends the runs in flight too, like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    futures = {pool.submit(run_subprocess, spec, stop, procs): spec for spec in todo}
    try:
        for future in as_completed(futures):
            spec = futures[future]
            try:
                record = future.result()
            except Exception as error:  # report it and go on with the other runs
                failed += 1
                print(f"[{spec['key']}] FAILED: {error}", file=sys.stderr, flush=True)
                continue
            merge_record(args.out, record)
            print(
                f"[{spec['key']}] done: PSNR {record['psnr']:.3f} SSIM {record['ssim']:.4f} "
                f"{record['seconds']:.0f} s {record['num_gaussians']} Gaussians"
                + (f" (truncated at {record['iterations_done']})" if record["truncated"] else ""),
                flush=True,
            )
    except KeyboardInterrupt:
        stop.set()
        for proc in list(procs):
            proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        print("interrupted: finished runs are saved; run the same command again to resume", file=sys.stderr)
        raise SystemExit(130) from None
    pool.shutdown(wait=True)
    return failed


# ------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--one", metavar="JSON", help="internal: train one run spec, print RESULT {json}")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (subprocesses)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: 2 // jobs, >= 1)")
    parser.add_argument("--scenes", nargs="+", choices=list(SCENES), default=list(SCENES))
    parser.add_argument("--lengths", nargs="+", type=int, default=list(LENGTHS), help="iterations")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--resolutions", nargs="+", choices=RESOLUTIONS, default=list(RESOLUTIONS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--fox", type=Path, default=SCENES["fox"], help="the fox scene folder")
    parser.add_argument("--fern", type=Path, default=SCENES["fern"], help="the LLFF fern folder")
    parser.add_argument(
        "--fox-downscale", nargs=2, type=int, default=DOWNSCALES["fox"], metavar=("LOW", "HIGH")
    )
    parser.add_argument(
        "--fern-downscale", nargs=2, type=int, default=DOWNSCALES["fern"], metavar=("LOW", "HIGH")
    )
    parser.add_argument("--time-limit", type=float, help="stop each run's training after this many seconds")
    parser.add_argument("--iterations-override", type=int, help="smoke tests only: N steps per run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (default: %(default)s)")
    parser.add_argument("--rerun", action="store_true", help="ignore cached runs")
    parser.add_argument("--dry-run", action="store_true", help="list what would run, train nothing")
    parser.add_argument("--table", action="store_true", help="print the markdown table only (no training)")
    parser.add_argument("--write-readme", action="store_true", help="write the table into README.md only")
    args = parser.parse_args()

    if args.one is not None:
        record = run_one(json.loads(args.one))
        print(RESULT_PREFIX + json.dumps(record), flush=True)
        return
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    args.threads = args.threads or max(1, 2 // args.jobs)
    args.out = args.out.resolve()
    if args.iterations_override is not None:
        if args.iterations_override < 1:
            parser.error("--iterations-override must be at least 1")
        if args.out == RESULTS.resolve():
            parser.error("--iterations-override is for smoke tests: give --out elsewhere than quality.json")
    specs = plan(args)

    if args.table or args.write_readme:
        text = table(specs, read_results(args.out))
        print(text)
        if args.write_readme:
            if write_readme(text):
                print(f"wrote the table into {README}")
            else:
                print(f"{README} has no {MARK_START} / {MARK_END} markers: left unchanged", file=sys.stderr)
        return

    failed = run_benchmark(specs, args)
    if not args.dry_run:
        print()
        print(table(specs, read_results(args.out)))
    if failed:
        print(f"{failed} runs failed (not cached; run again to retry)", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
