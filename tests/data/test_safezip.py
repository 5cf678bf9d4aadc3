"""Zip checks in isolation: what is skipped, refused and extracted."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from genfusion.data.safezip import ZipLimits, check_zip, extract_zip
from genfusion.errors import GenFusionError


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_small_compressible_members_pass_the_ratio_check(tmp_path: Path):
    # 100 KiB of zeros compresses ~1000x, but it is below ratio_check_min_bytes (1 MiB)
    archive = _zip(tmp_path / "a.zip", {"a/x.bmp": bytes(100 * 1024), "a/.hidden": b"h", "a/dir/": b""})
    names = [info.filename for info in check_zip(archive, ZipLimits(skip=lambda part: part.startswith(".")))]
    assert names == ["a/x.bmp"]
    files = extract_zip(archive, tmp_path / "out", ZipLimits(skip=lambda part: part.startswith(".")))
    assert files == [tmp_path / "out" / "a" / "x.bmp"]
    assert files[0].stat().st_size == 100 * 1024


def test_ratio_limit_is_configurable(tmp_path: Path):
    archive = _zip(tmp_path / "a.zip", {"x.bmp": bytes(2 * 1024**2)})
    with pytest.raises(GenFusionError, match="zip bomb"):
        check_zip(archive, ZipLimits())
    assert len(check_zip(archive, ZipLimits(max_ratio=1e6))) == 1


def test_symlink_member_is_refused(tmp_path: Path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("photo.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(GenFusionError, match="symbolic link"):
        check_zip(archive, ZipLimits())


def test_windows_drive_and_backslash_paths_are_refused(tmp_path: Path):
    for name in ("C:/evil.jpg", "a\\..\\..\\evil.jpg"):
        archive = tmp_path / "w.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            info = zipfile.ZipInfo("x")
            info.filename = name
            zf.writestr(info, b"x")
        with pytest.raises(GenFusionError, match="unsafe"):
            check_zip(archive, ZipLimits())
