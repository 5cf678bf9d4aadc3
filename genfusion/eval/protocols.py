"""The paper's two benchmark protocols (method.md, "Evaluation protocols") on the user's scenes.

``genfusion eval ROOT --protocol sparse|masked --out DIR`` runs, for every scene folder of ROOT
and every setting (sparse: N training views, split ``sparseN``; masked: 1/K of the frames seen
through a moving window, split ``maskedK``), one plain reconstruction per baseline method and one
fusion run, all from the same resolved settings and seed, so the arms differ only in what the
paper compares. Layout of DIR::

    <scene>/<split>/<arm>/   one run folder per arm (3dgs, 2dgs: genfusion.splat.run; fusion:
                             genfusion.fusion.loop, plus fusion_config.json as `genfusion fuse`)
    results.json             per scene, split and arm: metrics, time, Gaussians, per-round PSNR
    results.md               the paper-shaped table (ours beside the published numbers), per scene
    psnr_per_round.png       fusion test PSNR per round (needs matplotlib)

A benchmark takes hours, so everything is resumable: a run folder whose ``metrics.json`` exists
and whose stored settings equal the ones that would run is reused, an unfinished fusion run with
the same settings resumes from its last round, and ``results.json`` / ``results.md`` are
rewritten (atomically) after every run, so Ctrl-C loses at most the run in progress.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from genfusion.atomic import write_json_atomic, write_text_atomic
from genfusion.data import load_scene
from genfusion.data.types import Scene
from genfusion.errors import Cancelled, GenFusionError
from genfusion.eval.report import ARM_LABELS, FUSION_ARM, Published, plot_rounds, results_markdown, shown
from genfusion.fusion.config import FusionConfig, resolve
from genfusion.splat.config import ReconstructConfig
from genfusion.splat.data_loader import resolve_split

Protocol = Literal["sparse", "masked"]
Echo = Callable[[str], None]
StopCheck = Callable[[], bool]

RESULTS_NAME = "results.json"
TABLE_NAME = "results.md"
PLOT_NAME = "psnr_per_round.png"
FUSION_CONFIG_NAME = "fusion_config.json"  # the name `genfusion fuse` uses: `fuse --resume` works too
MODES: dict[str, str] = {"sparse": "sparse", "masked": "masked"}  # protocol -> FusionConfig.mode

# The paper's PSNR / SSIM / LPIPS (method.md tables), by arm and by our column label, shown
# beside ours in results.md as "published (Mip-NeRF 360 / DL3DV / Tanks and Temples)".
PUBLISHED_SPARSE: Published = {  # Mip-NeRF 360, ReconFusion splits
    "3dgs": {"3 views": (13.06, 0.251, 0.576), "6 views": (14.96, 0.355, 0.505),
             "9 views": (16.79, 0.447, 0.446)},
    "2dgs": {"3 views": (13.07, 0.243, 0.580), "6 views": (15.02, 0.338, 0.506),
             "9 views": (16.67, 0.423, 0.449)},
    FUSION_ARM: {"3 views": (15.29, 0.369, 0.585), "6 views": (17.16, 0.447, 0.500),
                 "9 views": (18.36, 0.496, 0.465)},
}  # fmt: skip
PUBLISHED_DL3DV: Published = {
    "3dgs": {"1/2": (17.22, 0.740, 0.314), "1/4": (16.90, 0.728, 0.321)},
    "2dgs": {"1/2": (16.56, 0.717, 0.323), "1/4": (16.02, 0.693, 0.336)},
    FUSION_ARM: {"1/2": (20.47, 0.788, 0.284), "1/4": (20.01, 0.780, 0.292)},
}
PUBLISHED_TNT: Published = {
    "3dgs": {"1/2": (15.95, 0.653, 0.414), "1/4": (14.75, 0.609, 0.440)},
    "2dgs": {"1/2": (15.46, 0.640, 0.409), "1/4": (14.38, 0.589, 0.440)},
    FUSION_ARM: {"1/2": (17.45, 0.662, 0.427), "1/4": (16.29, 0.630, 0.447)},
}
PUBLISHED: dict[str, list[tuple[str, Published]]] = {  # protocol -> (dataset, table)
    "sparse": [("Mip-NeRF 360", PUBLISHED_SPARSE)],
    "masked": [("DL3DV", PUBLISHED_DL3DV), ("Tanks and Temples", PUBLISHED_TNT)],
}


@dataclass
class EvalConfig:
    """What ``genfusion eval`` runs; the run settings themselves are ``base`` (a FusionConfig)."""

    root: Path  # folder with one scene folder (COLMAP, transforms.json or LLFF) per subfolder
    out: Path  # results.json / results.md / the plot, and one run folder per scene/split/arm
    protocol: Protocol = "sparse"  # sparse (N training views) or masked (1/K of the frames, windowed)
    views: tuple[int, ...] = (3, 6, 9)  # sparse: training-view counts, one setting each
    fractions: tuple[int, ...] = (2, 4)  # masked: train on every K-th frame, one setting per K
    scenes: tuple[str, ...] = ()  # subfolder names of root to evaluate; empty = every scene found
    methods: tuple[str, ...] = ("3dgs", "2dgs")  # plain-reconstruction arms (the paper's baselines)
    fusion: bool = True  # also run the fusion loop (the GenFusion arm) on every setting
    base: FusionConfig = field(default_factory=FusionConfig)  # user's run settings, before resolve
    explicit: frozenset[str] = frozenset()  # ReconstructConfig fields the user set; resolve keeps them

    def __post_init__(self) -> None:
        self.root, self.out = Path(self.root), Path(self.out)
        if self.protocol not in MODES:
            raise GenFusionError(f"unknown --protocol {self.protocol!r}; use sparse or masked")
        if any(n < 1 for n in self.views) or any(k < 2 for k in self.fractions):
            raise GenFusionError("--views must be at least 1 and --fractions at least 2 (e.g. 2 for 1/2)")
        unknown = [m for m in self.methods if m not in ("3dgs", "2dgs")]
        if unknown:
            raise GenFusionError(f"unknown --methods {unknown}; use 3dgs and/or 2dgs")
        if not self.methods and not self.fusion:
            raise GenFusionError("nothing to run: --no-fusion with no --methods; drop one of them")

    @property
    def arms(self) -> list[str]:
        return [*dict.fromkeys(self.methods), *([FUSION_ARM] if self.fusion else [])]

    @property
    def settings(self) -> list[tuple[str, str]]:
        """(split, column label) per setting: ("sparse3", "3 views"), ("masked2", "1/2")."""
        if self.protocol == "sparse":
            return [(f"sparse{n}", f"{n} views") for n in dict.fromkeys(self.views)]
        return [(f"masked{k}", f"1/{k}") for k in dict.fromkeys(self.fractions)]


@dataclass(frozen=True)
class SceneEntry:
    """A scene folder of ROOT that load_scene accepted."""

    name: str  # the subfolder's name (results key and run-folder name)
    path: Path  # the folder
    long_side: int  # longest image side at downscale 1 (for the preview budget's downscale)


# ----------------------------------------------------------------------------- scenes, settings


def find_scenes(root: Path, names: tuple[str, ...] = ()) -> tuple[list[SceneEntry], list[str]]:
    """The scene subfolders of ``root`` (all, or ``names`` in that order) and a note per
    subfolder that is not a scene; a missing root, no scene at all or an unknown name raise."""
    hint = "ROOT must be a folder holding one subfolder per scene (COLMAP, transforms.json or LLFF)."
    if not root.is_dir():
        raise GenFusionError("does not exist or is not a folder.", path=root, hint=hint)
    found: dict[str, SceneEntry] = {}
    rejected: dict[str, str] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            probe = load_scene(sub)  # headers only: cheap
        except GenFusionError as err:
            rejected[sub.name] = str(err)
            continue
        found[sub.name] = SceneEntry(sub.name, sub, max(max(c.width, c.height) for c in probe.cameras))
    notes = [f"skipping {name}/: not a scene ({why})" for name, why in rejected.items()]
    if not found:
        listed = f" (not scenes: {', '.join(rejected)})" if rejected else ""
        raise GenFusionError(f"holds no scene folder{listed}.", path=root, hint=hint)
    for name in names:
        if name not in found:
            why = f"{name}/ is not a scene ({rejected[name]})" if name in rejected else f"no scene {name!r}"
            raise GenFusionError(f"{why} in {root}; available: {', '.join(found)}")
    return ([found[n] for n in dict.fromkeys(names)] if names else list(found.values())), notes


def arm_configs(config: EvalConfig, entry: SceneEntry, split: str) -> dict[str, Any]:
    """arm -> the settings it runs with: the fusion arm's resolved FusionConfig, and for each
    method the same resolved ReconstructConfig with that method (rounds do not apply to it)."""
    base = dataclasses.replace(
        config.base,
        mode=MODES[config.protocol],
        reconstruct=dataclasses.replace(config.base.reconstruct, split=split),
    )
    fused = resolve(base, explicit={*config.explicit, "split"}, long_side=entry.long_side)
    arms: dict[str, Any] = {m: dataclasses.replace(fused.reconstruct, method=m) for m in config.methods}
    if config.fusion:
        arms[FUSION_ARM] = fused
    return arms


# ----------------------------------------------------------------------------- one run


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _as_stored(settings: ReconstructConfig | FusionConfig) -> dict[str, Any]:
    """The settings as a run folder stores them (JSON round trip: tuples become lists)."""
    return json.loads(json.dumps(settings.to_dict()))


def finished_run(run_dir: Path, settings: ReconstructConfig | FusionConfig) -> dict[str, Any] | None:
    """``{"metrics", "rounds"}`` of a finished run in ``run_dir`` made with exactly ``settings``,
    else None (absent, unfinished, damaged or made with other settings: it must run again)."""
    from genfusion.fusion.loop import SUMMARY_NAME
    from genfusion.splat.run import CONFIG_NAME, METRICS_NAME

    metrics = _read_json(run_dir / METRICS_NAME)
    if not isinstance(metrics, dict):
        return None
    if isinstance(settings, FusionConfig):
        summary = _read_json(run_dir / SUMMARY_NAME)
        if not isinstance(summary, dict) or summary.get("config") != _as_stored(settings):
            return None
        return {"metrics": metrics, "rounds": summary.get("rounds", [])}
    if _read_json(run_dir / CONFIG_NAME) != _as_stored(settings):
        return None
    return {"metrics": metrics, "rounds": None}


def run_arm(
    scene: Scene,
    settings: ReconstructConfig | FusionConfig,
    run_dir: Path,
    scene_info: dict[str, Any],
    stop_check: StopCheck | None = None,
) -> dict[str, Any]:
    """Train one arm into ``run_dir`` (replacing a stale folder; resuming a fusion run with the
    same settings); returns ``{"metrics", "rounds"}`` like :func:`finished_run`."""
    from genfusion.fusion.loop import STATE_NAME, FusionLoop
    from genfusion.splat.run import reconstruct

    if isinstance(settings, FusionConfig):
        resumable = (run_dir / STATE_NAME).is_file() and _read_json(
            run_dir / FUSION_CONFIG_NAME
        ) == _as_stored(settings)
        if not resumable and run_dir.exists():
            shutil.rmtree(run_dir)  # other settings or never started: its rounds would mix in
        loop = FusionLoop(scene, settings, run_dir, scene_info=scene_info)
        write_json_atomic(run_dir / FUSION_CONFIG_NAME, settings.to_dict())
        if resumable:
            loop.resume()
        metrics = loop.run(stop_check=stop_check)
        return {"metrics": metrics, "rounds": [r.__dict__ for r in loop.reports]}
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a stale or unfinished run with other settings
    metrics = reconstruct(scene, settings, run_dir, scene_info=scene_info, quiet=True, stop_check=stop_check)
    return {"metrics": metrics, "rounds": None}


def result_entry(done: dict[str, Any], protocol: str) -> dict[str, Any]:
    """What results.json keeps of a run: only stored facts (so a reused run gives the same)."""
    metrics = done["metrics"]
    entry = {key: metrics.get(key) for key in ("psnr", "ssim", "lpips")}
    if protocol == "masked":
        entry |= {key: metrics.get(key) for key in ("psnr_inside", "psnr_outside")}
    entry |= {
        "seconds": metrics.get("time_s"),
        "num_gaussians": metrics.get("num_gaussians"),
        "iterations": metrics.get("iterations"),
    }
    if metrics.get("lpips") is None and metrics.get("lpips_note"):
        entry["lpips_note"] = metrics["lpips_note"]
    if done["rounds"] is not None:
        entry["rounds"] = [{"step": r["step"], "test_psnr": r.get("test_psnr")} for r in done["rounds"]]
    return entry


# ----------------------------------------------------------------------------- the benchmark


def run_protocol(config: EvalConfig, *, echo: Echo = print, stop_check: StopCheck | None = None) -> dict:
    """Run (or reuse) every scene x setting x arm, writing results after each; returns them.

    A setting a scene cannot give (e.g. 9 views of 6 photos) or a run the trainer refuses is
    recorded as ``{"skipped": reason}`` and the rest goes on; :class:`Cancelled` and Ctrl-C
    propagate, with the results of every finished run already on disk.
    """
    entries, notes = find_scenes(config.root, config.scenes)
    for note in notes:
        echo(note)
    results: dict[str, Any] = {
        "protocol": config.protocol,
        "root": str(config.root.resolve()),
        "settings": [{"split": s, "label": label} for s, label in config.settings],
        "arms": config.arms,
        "notes": notes,
        "scenes": {},
    }
    for entry in entries:
        per_scene = results["scenes"].setdefault(entry.name, {})
        scenes: dict[int, Scene] = {}  # by downscale: every arm of a scene shares one
        for split, label in config.settings:
            cells = per_scene.setdefault(split, {})
            for arm, settings in arm_configs(config, entry, split).items():
                where = f"{entry.name} | {label} | {ARM_LABELS.get(arm, arm)}"
                run_dir = config.out / entry.name / split / arm
                cells[arm] = _one_arm(
                    config, entry, scenes, split, run_dir, settings, where, echo, stop_check
                )
                write_results(config.out, results)
    write_results(config.out, results)
    echo(plot_rounds(results, config.out / PLOT_NAME))
    return results


def _one_arm(
    config: EvalConfig,
    entry: SceneEntry,
    scenes: dict[int, Scene],
    split: str,
    run_dir: Path,
    settings: ReconstructConfig | FusionConfig,
    where: str,
    echo: Echo,
    stop_check: StopCheck | None,
) -> dict[str, Any]:
    """The results.json cell of one arm: reused, trained, or skipped with the reason (a split
    the scene cannot give, a run the trainer refuses); ``scenes`` caches loads by downscale."""
    reconstruct = settings.reconstruct if isinstance(settings, FusionConfig) else settings
    done = finished_run(run_dir, settings)
    state = "reused"
    if done is None:
        try:
            if reconstruct.downscale not in scenes:
                scenes[reconstruct.downscale] = load_scene(entry.path, downscale=reconstruct.downscale)
            scene = scenes[reconstruct.downscale]
            resolve_split(scene, split)  # a split the scene cannot give is skipped, not fatal
            info = {
                "path": str(entry.path.resolve()),
                "downscale": reconstruct.downscale,
                "format": scene.format,
            }
            done, state = run_arm(scene, settings, run_dir, info, stop_check), "trained"
        except Cancelled:
            raise
        except GenFusionError as err:
            echo(f"{where}: skipped: {err}")
            return {"skipped": str(err)}
    cell = result_entry(done, config.protocol)
    echo(f"{where}: PSNR {shown(cell['psnr'])} dB, {shown(cell['seconds'], 0)} s, {state}")
    return cell


def write_results(out: Path, results: dict[str, Any]) -> None:
    """results.json and results.md, each replaced atomically (a reader never sees half)."""
    write_json_atomic(out / RESULTS_NAME, results)
    write_text_atomic(out / TABLE_NAME, results_markdown(results, PUBLISHED[results["protocol"]]))
