"""The markdown table of ``bench_quality.py``'s results (``--table``, and after a run) and writing
it between the markers in ``benchmarks/README.md`` (``--write-readme``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks.quality_cases import METHODS, REPO, RESOLUTIONS, SCENES, TOLERANCE_DB, VARIANTS

README = REPO / "benchmarks" / "README.md"
MARK_START, MARK_END = "<!-- quality-table:start -->", "<!-- quality-table:end -->"


def fmt_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def fmt_count(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1e6:.2f}M"
    if count >= 10_000:
        return f"{count / 1e3:.0f}k"
    return f"{count:,}"


def table(specs: list[dict[str, Any]], results: dict[str, Any]) -> str:
    """Markdown table of the selected cases from ``results`` (runs with another config: not run)."""
    runs = results.get("runs", {})
    header = (
        "| scene | resolution | method | iterations | default PSNR | default SSIM | default time | "
        "default Gaussians | control PSNR | control SSIM | control time | control Gaussians | "
        "delta (dB) | ok |"
    )
    lines = [header, "|" + "---|" * 14]
    used: list[dict[str, Any]] = []
    cases: dict[str, dict[str, dict[str, Any]]] = {}
    order = {"scene": list(SCENES), "resolution": list(RESOLUTIONS), "method": list(METHODS)}
    for spec in sorted(
        specs, key=lambda s: (*(order[k].index(s[k]) for k in order), s["length"], s["variant"])
    ):
        cases.setdefault(spec["key"].rsplit("/", 1)[0], {})[spec["variant"]] = spec
    for variants in cases.values():
        first = next(iter(variants.values()))
        cells: list[str] = []
        records: dict[str, dict[str, Any] | None] = {}
        size = None
        notes = []
        for variant in VARIANTS:
            spec = variants.get(variant)
            record = runs.get(spec["key"]) if spec else None
            if record is not None and (
                record.get("config") != spec["config"]
                or record.get("iterations_override") != spec["iterations_override"]
            ):
                record = None  # measured with another config: does not stand for this case
            records[variant] = record
            if record is None:
                cells += ["not run", "", "", ""]
                continue
            used.append(record)
            size = record["size"]
            mark = "*" if record["truncated"] else ""
            if record["truncated"]:
                notes.append(f"{variant} stopped at {record['iterations_done']}")
            cells += [
                f"{record['psnr']:.2f}{mark}",
                f"{record['ssim']:.3f}{mark}",
                fmt_seconds(record["seconds"]),
                fmt_count(record["num_gaussians"]),
            ]
        default, control = records["default"], records["control"]
        delta, ok = "", "not run"
        if default and control:
            difference = default["psnr"] - control["psnr"]
            delta = f"{difference:+.2f}"
            truncated = default["truncated"] or control["truncated"]
            ok = "n/a (truncated)" if truncated else ("yes" if difference >= -TOLERANCE_DB - 1e-9 else "no")
        resolution = (
            f"{size[0]}x{size[1]} (1/{first['downscale']})"
            if size
            else f"{first['resolution']} (1/{first['downscale']})"
        )
        iterations = str(first["config"]["iterations"])
        if first["iterations_override"]:
            iterations += f" (smoke; case {first['length']})"
        if notes:
            iterations += " (" + ", ".join(notes) + ")"
        row = [first["scene"], resolution, first["method"], iterations, *cells, delta, ok]
        lines.append("| " + " | ".join(row) + " |")
    commits = sorted({r["commit"] for r in used})
    threads = sorted({r["threads"] for r in used})
    footer = [
        "",
        f"PSNR / SSIM: mean over the held-out views (every 8th); time: training wall time; "
        f"delta = default - control PSNR; ok: default no worse than control by more than "
        f"{TOLERANCE_DB} dB. Commit(s): {', '.join(commits) or '-'}; torch threads per run: "
        f"{', '.join(map(str, threads)) or '-'}.",
    ]
    if any(r["truncated"] for r in used):
        footer.append("`*` truncated by `--time-limit`: not a full run.")
    return "\n".join(lines + footer)


def write_readme(text: str, readme: Path = README) -> bool:
    """Replace what lies between the markers in the README (False when they are absent)."""
    content = readme.read_text()
    start, end = content.find(MARK_START), content.find(MARK_END)
    if start < 0 or end < start:
        return False
    new = content[: start + len(MARK_START)] + "\n" + text + "\n" + content[end:]
    tmp = readme.with_name(f"{readme.name}.{os.getpid()}.tmp")
    tmp.write_text(new)
    os.replace(tmp, readme)
    return True
