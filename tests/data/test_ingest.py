"""Uploads -> a clean folder of images: folders, zips, videos and every bad-input case."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genfusion.data.ingest import IngestConfig, ingest, natural_key
from genfusion.errors import GenFusionError
from genfusion.progress import ProgressEvent


def _photo(path: Path, seed: int = 0, size: tuple[int, int] = (64, 48)) -> Path:
    """A small textured JPEG (random blocks, so it is not trivially compressible)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))).save(path, quality=92)
    return path


def _tree(root: Path) -> set[str]:
    """Every path under ``root``, relative, for 'nothing was written elsewhere' checks."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in (1, 2, 10):
        _photo(folder / f"img{index}.jpg", seed=index)
    return folder


def test_natural_order():
    names = ["img10.jpg", "img2.jpg", "IMG1.jpg"]
    assert sorted(names, key=natural_key) == ["IMG1.jpg", "img2.jpg", "img10.jpg"]


def test_folder_copies_in_natural_order_and_skips_litter(photo_dir: Path, tmp_path: Path):
    (photo_dir / ".DS_Store").write_bytes(b"\0\1junk")
    (photo_dir / "Thumbs.db").write_bytes(b"junk")
    (photo_dir / "sub").mkdir()  # sub-folders are not photos
    events: list[ProgressEvent] = []
    result = ingest(photo_dir, tmp_path / "out", progress=events.append)
    assert result.kind == "folder"
    assert result.names == ["img1.jpg", "img2.jpg", "img10.jpg"]
    assert result.images_dir == tmp_path / "out" / "images"
    assert sorted(p.name for p in result.images_dir.iterdir()) == sorted(result.names)
    # untouched photos are copied byte for byte (EXIF focal length survives)
    assert (result.images_dir / "img2.jpg").read_bytes() == (photo_dir / "img2.jpg").read_bytes()
    assert result.sizes["img1.jpg"] == (64, 48)
    assert [e.step for e in events] == [1, 2, 3] and all(e.total == 3 for e in events)
    assert _tree(tmp_path / "out") == {"images", *(f"images/{n}" for n in result.names)}


def test_folder_uses_images_subfolder_and_downscales_and_converts(tmp_path: Path):
    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)
    _photo(scene / "images" / "a.jpg", size=(640, 480))
    Image.fromarray(np.full((480, 640, 3), 90, np.uint8)).save(scene / "images" / "b.webp")
    result = ingest(scene, tmp_path / "out", config=IngestConfig(max_size=160))
    assert result.names == ["a.jpg", "b.png"]  # webp re-encoded as png for COLMAP
    for name in result.names:
        with Image.open(result.images_dir / name) as image:
            assert image.size == (160, 120)


def test_exif_rotation_is_applied(tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    image = Image.fromarray(np.zeros((40, 80, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a portrait phone photo stored landscape
    image.save(folder / "p.jpg", exif=exif.tobytes())
    result = ingest(folder, tmp_path / "out")
    with Image.open(result.images_dir / "p.jpg") as written:
        assert written.size == (40, 80)
        assert written.getexif().get(0x0112, 1) == 1


def test_zip_with_wrapping_folder_and_macos_litter(photo_dir: Path, tmp_path: Path):
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for photo in sorted(photo_dir.iterdir()):
            zf.write(photo, f"holiday/{photo.name}")
        zf.writestr("__MACOSX/holiday/._img1.jpg", b"resource fork")
        zf.writestr("holiday/.hidden.jpg", b"not even an image")
    result = ingest(archive, tmp_path / "out")
    assert result.kind == "zip"
    assert result.names == ["img1.jpg", "img2.jpg", "img10.jpg"]
    assert _tree(tmp_path / "out") == {"images", *(f"images/{n}" for n in result.names)}


# ----------------------------------------------------------------------------- bad input


def _assert_failed_cleanly(err: pytest.ExceptionInfo, names: str, tmp_path: Path, before: set[str]):
    """The message names the file and says what to do; nothing new was left anywhere."""
    message = str(err.value)
    assert names in message, message
    hints = ("remove", "move", "put", "re-create", "upload", "check", "try")
    assert any(word in message.lower() for word in hints), message
    assert _tree(tmp_path) == before, _tree(tmp_path) ^ before


def test_empty_folder(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    before = _tree(tmp_path)
    with pytest.raises(GenFusionError, match="contains no images") as err:
        ingest(tmp_path / "empty", tmp_path / "out")
    _assert_failed_cleanly(err, str(tmp_path / "empty"), tmp_path, before)


def test_corrupt_image(photo_dir: Path, tmp_path: Path):
    good = (photo_dir / "img2.jpg").read_bytes()
    (photo_dir / "img2.jpg").write_bytes(good[: len(good) // 2])  # truncated mid-stream
    before = _tree(tmp_path)
    with pytest.raises(GenFusionError, match="not a readable image") as err:
        ingest(photo_dir, tmp_path / "out")
    _assert_failed_cleanly(err, str(photo_dir / "img2.jpg"), tmp_path, before)


def test_garbage_named_as_image(photo_dir: Path, tmp_path: Path):
    (photo_dir / "img3.png").write_bytes(np.random.default_rng(0).bytes(2000))
    before = _tree(tmp_path)
    with pytest.raises(GenFusionError, match="not a readable image") as err:
        ingest(photo_dir, tmp_path / "out")
    _assert_failed_cleanly(err, "img3.png", tmp_path, before)


def test_non_image_file_among_images(photo_dir: Path, tmp_path: Path):
    (photo_dir / "notes.txt").write_text("shot on a sunny day")
    before = _tree(tmp_path)
    with pytest.raises(GenFusionError, match="is not an image") as err:
        ingest(photo_dir, tmp_path / "out")
    _assert_failed_cleanly(err, str(photo_dir / "notes.txt"), tmp_path, before)


def test_non_image_inside_zip_names_the_member(photo_dir: Path, tmp_path: Path):
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(photo_dir / "img1.jpg", "img1.jpg")
        zf.writestr("readme.md", "hello")
    before = _tree(tmp_path)
    with pytest.raises(GenFusionError, match="is not an image") as err:
        ingest(archive, tmp_path / "out")
    _assert_failed_cleanly(err, str(archive / "readme.md"), tmp_path, before)


def test_zip_slip_relative(photo_dir: Path, tmp_path: Path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(photo_dir / "img1.jpg", "img1.jpg")
        zf.write(photo_dir / "img2.jpg", "../../../evil.jpg")
    before = _tree(tmp_path)
    with pytest.raises(GenFusionError, match="'..'") as err:
        ingest(archive, tmp_path / "out")
    _assert_failed_cleanly(err, str(archive), tmp_path, before)
    assert not (tmp_path.parent / "evil.jpg").exists()
    assert not list(tmp_path.parent.parent.glob("evil.jpg"))


def test_zip_slip_absolute(photo_dir: Path, tmp_path: Path):
    archive = tmp_path / "evil.zip"
    target = tmp_path / "absolute_evil.jpg"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(photo_dir / "img1.jpg", "img1.jpg")
        info = zipfile.ZipInfo("img2.jpg")
        info.filename = str(target)  # ZipInfo strips a leading '/', so force it back
        zf.writestr(info, (photo_dir / "img2.jpg").read_bytes())
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist()[1].startswith("/")
    before = _tree(tmp_path)
    with pytest.raises(GenFusionError, match="absolute path") as err:
        ingest(archive, tmp_path / "out")
    _assert_failed_cleanly(err, str(archive), tmp_path, before)
    assert not target.exists()


def test_zip_bomb_ratio(photo_dir: Path, tmp_path: Path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(photo_dir / "img1.jpg", "img1.jpg")
        zf.writestr("img2.bmp", bytes(20 * 1024**2))  # 20 MiB of zeros -> ~20 KiB
    info = zipfile.ZipFile(archive).getinfo("img2.bmp")
    assert info.file_size / info.compress_size > 500
    before = _tree(tmp_path)
    with pytest.raises(GenFusionError, match="zip bomb") as err:
        ingest(archive, tmp_path / "out")
    _assert_failed_cleanly(err, str(archive), tmp_path, before)


def test_zip_bomb_total_size(photo_dir: Path, tmp_path: Path):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for photo in sorted(photo_dir.iterdir()):
            zf.write(photo, photo.name)
    total = sum(i.file_size for i in zipfile.ZipFile(archive).infolist())
    before = _tree(tmp_path)
    with pytest.raises(GenFusionError, match="MiB limit") as err:
        ingest(archive, tmp_path / "out", config=IngestConfig(max_zip_bytes=total - 1))
    _assert_failed_cleanly(err, str(archive), tmp_path, before)
    # exactly at the limit it is accepted
    assert len(ingest(archive, tmp_path / "ok", config=IngestConfig(max_zip_bytes=total)).names) == 3


def test_not_a_zip(tmp_path: Path):
    (tmp_path / "photos.zip").write_bytes(b"PK\x03\x04 but not really")
    before = _tree(tmp_path)
    with pytest.raises(GenFusionError, match="not a readable zip") as err:
        ingest(tmp_path / "photos.zip", tmp_path / "out")
    _assert_failed_cleanly(err, str(tmp_path / "photos.zip"), tmp_path, before)


def test_unsupported_input_and_missing_input(tmp_path: Path):
    (tmp_path / "scene.obj").write_text("v 0 0 0")
    with pytest.raises(GenFusionError, match="not a folder, a .zip or a video"):
        ingest(tmp_path / "scene.obj", tmp_path / "out")
    with pytest.raises(GenFusionError, match="does not exist"):
        ingest(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_images_folder_is_not_overwritten(photo_dir: Path, tmp_path: Path):
    (tmp_path / "out" / "images").mkdir(parents=True)
    with pytest.raises(GenFusionError, match="already exists"):
        ingest(photo_dir, tmp_path / "out")
