"""`genfusion download`: fetch the official repair-model files from Hugging Face and convert them.

Weights are never fetched implicitly; this is the one explicit step that does. Files land in a
cache folder under predictable names, so they can also be placed there by hand (offline
machines); files already present are never downloaded again. Without a network the command fails
at once (a 3-second connectivity probe, or ``HF_HUB_OFFLINE=1``) with the list of files to place
by hand and where.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from genfusion.errors import GenFusionError
from genfusion.progress import ProgressCallback, ProgressEvent, emit

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("checkpoints/genfusion-repair")
DEFAULT_CACHE = Path("checkpoints/downloads")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hugging Face repository and where it lands in the cache folder."""

    repo_id: str  # Hugging Face repository
    filename: str  # path inside the repository
    folder: str  # sub-folder of the cache folder (the file keeps its repository path below it)
    what: str  # one line for messages and the README
    size: str  # approximate download size
    required: bool  # needed for the conversion (False: upstream original kept for verification)

    def local_path(self, cache: Path) -> Path:
        return cache / self.folder / self.filename

    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/blob/main/{self.filename}"


CHECKPOINT = RemoteFile(
    "Sibo2rr/GenFusion-GenerationModel",
    "epoch=59-step=34000.ckpt",
    "GenFusion-GenerationModel",
    "GenFusion repair model (Lightning checkpoint: UNet, Resampler, CLIP image tower, VAE)",
    "about 10 GB",
    True,
)
VAE_FILES = (
    RemoteFile("Intel/ldm3d-4c", "vae/config.json", "ldm3d-4c", "ldm3d-4c RGB-D VAE config", "1 KB", False),
    RemoteFile(
        "Intel/ldm3d-4c",
        "vae/diffusion_pytorch_model.safetensors",
        "ldm3d-4c",
        "ldm3d-4c RGB-D VAE weights (upstream original of the checkpoint's VAE)",
        "about 335 MB",
        False,
    ),
)
CLIP_FILE = RemoteFile(
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    "open_clip_pytorch_model.bin",
    "CLIP-ViT-H-14-laion2B-s32B-b79K",
    "OpenCLIP ViT-H-14 (upstream original of the checkpoint's image tower)",
    "about 3.9 GB",
    False,
)
ALL_FILES = (CHECKPOINT, *VAE_FILES, CLIP_FILE)


def planned_files(checkpoint_only: bool) -> tuple[RemoteFile, ...]:
    """The files ``genfusion download`` fetches (only the checkpoint with ``checkpoint_only``)."""
    return (CHECKPOINT,) if checkpoint_only else ALL_FILES


def missing_files(cache: Path, files: tuple[RemoteFile, ...]) -> list[RemoteFile]:
    """Files not yet in the cache folder (downloaded earlier or placed by hand)."""
    return [f for f in files if not f.local_path(cache).is_file()]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def offline_reason(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be reached right now, or None when it looks reachable.

    Checked before any download so that an offline machine fails at once instead of retrying.
    """
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"cannot reach {host}:{port} ({err.__class__.__name__}: {err})"
    return None


def manual_placement_message(cache: Path, files: list[RemoteFile], reason: str) -> str:
    """The offline error: every missing file, where to get it and where to put it."""
    lines = [f"cannot download the repair-model weights: {reason}. Place these files by hand:"]
    for f in files:
        lines.append(f"  {f.local_path(cache)}  <-  {f.url()}  ({f.what}, {f.size})")
    lines.append(
        "then run `genfusion download` again (it converts what it finds) or "
        "`genfusion convert-checkpoint` on the .ckpt; see checkpoints/README.md."
    )
    return "\n".join(lines)


def fetch(files: list[RemoteFile], cache: Path, progress: ProgressCallback | None = None) -> None:
    """Download ``files`` into ``cache`` with huggingface_hub (resumable, atomic per file)."""
    from huggingface_hub import hf_hub_download

    for i, f in enumerate(files):
        emit(progress, ProgressEvent("download", i, len(files), f"{f.repo_id}/{f.filename} ({f.size})"))
        try:
            hf_hub_download(repo_id=f.repo_id, filename=f.filename, local_dir=cache / f.folder)
        except Exception as err:  # network, auth, disk: all user-fixable
            raise GenFusionError(
                f"downloading {f.repo_id}/{f.filename} failed ({err.__class__.__name__}: {err}).",
                hint=f"Retry, or place it by hand at {f.local_path(cache)} (see checkpoints/README.md).",
            ) from err
    emit(progress, ProgressEvent("download", len(files), len(files), "done"))


def download_and_convert(
    out: str | Path = DEFAULT_OUT,
    cache: str | Path = DEFAULT_CACHE,
    *,
    checkpoint_only: bool = False,
    overwrite: bool = False,
    trust_checkpoint: bool = False,
    timeout: float = 3.0,
    progress: ProgressCallback | None = None,
) -> Path:
    """Make sure the converted repair model exists in ``out``; returns ``out``.

    Files already in ``cache`` are used as they are (downloaded before or placed by hand); the
    rest are fetched, after a quick connectivity check. Then the checkpoint is converted with
    :func:`genfusion.generation.convert.convert_checkpoint`.
    """
    from genfusion.generation.repairer import checkpoint_problems

    out, cache = Path(out), Path(cache)
    if not overwrite and not checkpoint_problems(out):
        logger.info("%s already holds a complete converted model; nothing to do", out)
        return out
    files = planned_files(checkpoint_only)
    missing = missing_files(cache, files)
    if missing:
        reason = offline_reason(timeout)
        if reason is not None:
            raise GenFusionError(manual_placement_message(cache, missing, reason))
        cache.mkdir(parents=True, exist_ok=True)
        fetch(missing, cache, progress)
    from genfusion.generation.convert import convert_checkpoint

    return convert_checkpoint(
        CHECKPOINT.local_path(cache),
        out,
        overwrite=overwrite or out.exists(),
        trust_pickle=trust_checkpoint,
        progress=progress,
    )
