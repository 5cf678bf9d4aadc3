"""Safe extraction of user-uploaded zip archives.

Two attacks are refused *before* anything is written: zip-slip (a member path that is absolute
or climbs out with ``..``, which would write outside the extraction folder) and zip bombs (a
small archive that declares an absurd total size, or a member compressed far beyond what real
photos allow). While extracting, the bytes actually written are counted too, because a crafted
archive can lie in its central directory.
"""

from __future__ import annotations

import re
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from genfusion.errors import GenFusionError


def _never(name: str) -> bool:
    return False


@dataclass
class ZipLimits:
    """What an archive may contain."""

    max_total_bytes: int = 4 * 1024**3  # refuse archives declaring more uncompressed bytes
    max_ratio: float = 200.0  # refuse members compressed more than this (photos barely compress)
    ratio_check_min_bytes: int = 1024**2  # members smaller than this skip the ratio check
    skip: Callable[[str], bool] = field(default=_never)  # path parts to leave out (OS litter)


def _unsafe_member_reason(name: str) -> str | None:
    """Why a zip member path could escape the extraction folder (zip-slip), or None."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        return "has an absolute path"
    if ".." in PurePosixPath(normalised).parts:
        return "climbs out of the archive with '..'"
    return None


def check_zip(zip_path: Path, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """Validate an archive's central directory before extracting anything.

    Returns the members worth extracting (files that ``limits.skip`` does not drop). Raises a clear
    error for zip-slip paths, symlinks, encryption, and bomb-like sizes or ratios.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise GenFusionError(
            f"is not a readable zip archive ({err}).", path=zip_path, hint="Re-create the zip and try again."
        ) from None
    with archive:
        members = archive.infolist()
    wanted: list[zipfile.ZipInfo] = []
    total = 0
    for info in members:
        reason = _unsafe_member_reason(info.filename)
        if reason:
            raise GenFusionError(
                f"is unsafe: member '{info.filename}' {reason}.",
                path=zip_path,
                hint="Re-create the zip from the photo folder itself (relative paths only).",
            )
        if info.is_dir() or any(limits.skip(part) for part in PurePosixPath(info.filename).parts):
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise GenFusionError(
                f"contains a symbolic link '{info.filename}'.",
                path=zip_path,
                hint="Zip the photos themselves, not links to them.",
            )
        if info.flag_bits & 0x1:
            raise GenFusionError(
                f"is encrypted (member '{info.filename}').",
                path=zip_path,
                hint="Upload an archive without a password.",
            )
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= limits.ratio_check_min_bytes and ratio > limits.max_ratio:
            raise GenFusionError(
                f"looks like a zip bomb: member '{info.filename}' expands {ratio:.0f}x"
                f" (limit {limits.max_ratio:.0f}x).",
                path=zip_path,
                hint="Photos barely compress; upload a zip of the photos themselves.",
            )
        wanted.append(info)
    if total > limits.max_total_bytes:
        raise GenFusionError(
            f"would expand to {total / 1024**2:.0f} MiB, over the"
            f" {limits.max_total_bytes / 1024**2:.0f} MiB limit.",
            path=zip_path,
            hint="Upload fewer or smaller photos, or raise the zip size limit.",
        )
    return wanted


def extract_zip(zip_path: Path, dest: Path, limits: ZipLimits) -> list[Path]:
    """Extract the wanted members of a checked archive into ``dest`` (counting the bytes really
    written); returns the extracted files."""
    members = check_zip(zip_path, limits)
    extracted: list[Path] = []
    written_total = 0
    chunk = 1024 * 1024
    with zipfile.ZipFile(zip_path) as archive:
        for info in members:
            target = dest.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
            # Belt and braces: the resolved target must stay inside dest.
            if not target.resolve().is_relative_to(dest.resolve()):
                raise GenFusionError(
                    f"is unsafe: member '{info.filename}' resolves outside the extraction folder.",
                    path=zip_path,
                    hint="Re-create the zip from the photo folder itself.",
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            extracted.append(target)
            written = 0
            try:
                with archive.open(info) as src, open(target, "wb") as dst:
                    while block := src.read(chunk):
                        written += len(block)
                        written_total += len(block)
                        if written > info.file_size or written_total > limits.max_total_bytes:
                            raise GenFusionError(
                                f"looks like a zip bomb: member '{info.filename}' expands past its"
                                " declared size or the total limit.",
                                path=zip_path,
                                hint="Upload a zip of the photos themselves.",
                            )
                        dst.write(block)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as err:
                raise GenFusionError(
                    f"member '{info.filename}' cannot be extracted ({err}).",
                    path=zip_path,
                    hint="Re-create the zip and try again.",
                ) from None
    return extracted
