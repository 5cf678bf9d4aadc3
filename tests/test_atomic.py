"""Write-then-rename helpers: success replaces, failure leaves the old file or folder and no
temporary behind, and outputs get the usual permissions (not mkstemp's 0600)."""

from __future__ import annotations

import json
import os

import pytest

from genfusion.atomic import atomic_directory, atomic_path, write_bytes_atomic, write_json_atomic


def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.ply"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".ply" and tmp.name.startswith(".")
        tmp.write_bytes(b"one")
    assert target.read_bytes() == b"one"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.ply"]


def test_outputs_get_the_umask_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = write_bytes_atomic(tmp_path / "a.bin", b"x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    with atomic_directory(tmp_path / "folder") as tmp:
        (tmp / "f").write_text("y")
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~umask


def test_write_json_atomic_keeps_non_finite_values(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"psnr": float("inf"), "views": [1]})
    assert path.read_text().endswith("\n") and json.loads(path.read_text()) == {
        "psnr": float("inf"),
        "views": [1],
    }


def test_atomic_directory_swaps_whole_and_fails_cleanly(tmp_path):
    final = tmp_path / "renders"
    with atomic_directory(final) as tmp:
        (tmp / "a.png").write_bytes(b"a")
        (tmp / "b.png").write_bytes(b"b")
    with atomic_directory(final) as tmp:
        (tmp / "c.png").write_bytes(b"c")
    assert sorted(p.name for p in final.iterdir()) == ["c.png"]  # replaced, not merged
    with pytest.raises(OSError), atomic_directory(final) as tmp:
        (tmp / "d.png").write_bytes(b"d")
        raise OSError("disk full")
    assert sorted(p.name for p in final.iterdir()) == ["c.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["renders"]  # no temporary or old copy left
