"""Write-then-rename, so an interrupted or failed write never leaves a half-written file or folder
and never replaces the previous good one.

Every writer in the package goes through here (exports, the run folder, checkpoints, the scene
writers, the image cache). This module sits at the ground level of the package (it imports nothing
from it) so that every layer can use it.

Temporary names are hidden (leading ``.``), live in the destination's folder (``os.replace`` is
atomic only within one file system) and are made unique by the process id and a random part, so
two processes writing the same destination never share a temporary. They are not created with
``tempfile.mkstemp``/``mkdtemp`` on purpose: those make files mode 0600 and folders 0700, which the
rename would carry onto the final output; here the usual umask applies.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _sibling(path: Path, tag: str, *, keep_suffix: bool) -> Path:
    """A hidden, unique name beside ``path``: ``.<name>.<tag>-<pid>-<random>``, or for files
    ``.<stem>.<tag>-<pid>-<random><suffix>`` (writers such as trimesh, imageio and np.save pick
    the format from the suffix)."""
    unique = f"{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if keep_suffix:
        return path.with_name(f".{path.stem}.{unique}{path.suffix}")
    return path.with_name(f".{path.name}.{unique}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success it is renamed onto ``path``.

    The parent folder is created. The caller writes the temporary file however it likes (the path
    does not exist yet). On any exception (KeyboardInterrupt included) the temporary file is
    removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp", keep_suffix=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, value: Any, *, indent: int | None = 2) -> Path:
    """Write ``value`` as JSON (with a final newline) to ``path`` atomically; returns ``path``.

    NaN and infinities are written as ``NaN``/``Infinity`` (Python's json reads them back), so a
    metric that came out non-finite is still recorded rather than failing the whole write.
    """
    return write_text_atomic(path, json.dumps(value, indent=indent, allow_nan=True) + "\n")


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` whole.

    A folder already at ``path`` is first renamed aside, then removed once the new one is in
    place, so readers see the old contents or the new ones, never a mixture (POSIX has no atomic
    exchange of two folders: for an instant between the two renames ``path`` is absent). If the
    block raises, the temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp", keep_suffix=False)
    tmp.mkdir()
    try:
        yield tmp
        replace_directory(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_directory(src: str | Path, dst: str | Path) -> Path:
    """Move the folder ``src`` onto ``dst`` (same file system), replacing any folder there.

    If the final rename fails, the previous ``dst`` is put back before the error propagates.
    """
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.replace(src, dst)
        return dst
    old = _sibling(dst, "old", keep_suffix=False)
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dst
