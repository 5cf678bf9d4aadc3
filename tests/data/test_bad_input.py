"""Bad input: each case raises one GenFusionError that names the file and says what to do, and
nothing is written anywhere (the scene folder is unchanged afterwards)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from genfusion.data import load_image, load_scene, verify_images
from genfusion.data.writers import write_colmap_binary, write_colmap_text
from genfusion.errors import GenFusionError


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def _load_fails(folder: Path, **kwargs) -> str:
    """Load ``folder`` expecting a GenFusionError; check nothing was written; return the message."""
    before = _snapshot(folder)
    with pytest.raises(GenFusionError) as info:
        load_scene(folder, **kwargs)
    assert _snapshot(folder) == before
    return str(info.value)


def _image(scene: Path, index: int) -> Path:
    """The index-th photo of the scene (fox file names have gaps, so never guess them)."""
    return sorted((scene / "images").iterdir())[index]


def _frames(scene: Path) -> list[dict]:
    return json.loads((scene / "transforms.json").read_text())["frames"]


def _edit_json(scene: Path, edit) -> None:
    meta = json.loads((scene / "transforms.json").read_text())
    edit(meta)
    (scene / "transforms.json").write_text(json.dumps(meta))


def test_corrupt_image(small_fox: Path):
    bad = _image(small_fox, 2)
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    message = _load_fails(small_fox)
    assert str(bad) in message and "not a readable image" in message and "Replace it" in message


def test_truncated_image(small_fox: Path, tmp_path: Path):
    bad = _image(small_fox, 3)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # header intact, data cut
    scene = load_scene(small_fox, cache_dir=tmp_path / "cache")  # headers are fine...
    camera = next(c for c in scene.cameras if c.image_path == bad)
    with pytest.raises(GenFusionError) as info:  # ...decoding is not
        load_image(camera)
    assert str(bad) in str(info.value) and "truncated" in str(info.value) and "Replace it" in str(info.value)
    with pytest.raises(GenFusionError, match=bad.name):
        verify_images(scene.cameras)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_non_image_file_among_images(small_fox: Path):
    notes = small_fox / "images" / "notes.txt"
    notes.write_text("shot on a cloudy day\n")
    _edit_json(small_fox, lambda meta: meta["frames"][2].update(file_path="images/notes.txt"))
    message = _load_fails(small_fox)
    assert str(notes) in message and "not a readable image" in message


def test_non_image_in_llff_folder(fern_dir: Path, tmp_path: Path):
    scene = tmp_path / "fern"
    scene.mkdir()
    shutil.copy(fern_dir / "poses_bounds.npy", scene)
    shutil.copytree(fern_dir / "images_8", scene / "images_8")
    (scene / "images_8" / "README.txt").write_text("not a photo")  # other extensions are ignored
    assert len(load_scene(scene, downscale=8, cache_dir=tmp_path / "c")) == 20
    fake = scene / "images_8" / "image007.png"
    fake.write_text("not a photo either")
    message = _load_fails(scene, downscale=8, cache_dir=tmp_path / "c")
    assert str(fake) in message and "not a readable image" in message


def test_images_of_different_sizes_under_one_camera(small_fox: Path):
    odd = _image(small_fox, 4)
    cv2.imwrite(str(odd), cv2.resize(cv2.imread(str(odd)), (100, 240)))
    message = _load_fails(small_fox)
    assert str(odd) in message and "100x240" in message and "135x240" in message and "same camera" in message


def test_pose_file_references_missing_images(small_fox: Path):
    gone = [_image(small_fox, 0), _image(small_fox, 5)]
    for path in gone:
        path.unlink()
    message = _load_fails(small_fox)
    assert str(small_fox / "transforms.json") in message
    assert all(str(path) in message for path in gone) and "2 of 8" in message and "allow_missing" in message


def test_all_images_missing_is_an_error_even_when_allowed(small_fox: Path):
    shutil.rmtree(small_fox / "images")
    message = _load_fails(small_fox, allow_missing=True)
    assert "none of the 8 images" in message and "relative to it" in message


@pytest.mark.parametrize(
    "value, expected",
    [
        (float("nan"), "NaN or infinite"),
        (float("inf"), "NaN or infinite"),
        ("singular", "singular"),
        ("scaled", "not a rotation"),
        ("mirror", "mirror"),
    ],
)
def test_bad_poses_in_transforms(small_fox: Path, value, expected: str):
    def edit(meta):
        matrix = np.array(meta["frames"][4]["transform_matrix"])
        if value == "singular":
            matrix[:3, 2] = matrix[:3, 1]  # two equal axes: determinant 0
        elif value == "scaled":
            matrix[:3, :3] *= 2.0
        elif value == "mirror":
            matrix[:3, 0] *= -1.0
        else:
            matrix[1, 3] = value
        meta["frames"][4]["transform_matrix"] = matrix.tolist()

    _edit_json(small_fox, edit)
    message = _load_fails(small_fox)
    frame = _frames(small_fox)[4]["file_path"]
    assert f"frame '{frame}'" in message and expected in message and "transforms.json" in message
    assert "Fix or remove this frame" in message


@pytest.mark.parametrize("kind", ["text", "binary"])
def test_nan_pose_in_colmap_model(small_fox: Path, kind: str):
    scene = load_scene(small_fox, undistort=False)
    model = small_fox / "sparse" / "0"
    if kind == "text":
        write_colmap_text(scene, model)
        lines = (model / "images.txt").read_text().splitlines()
        first = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
        fields = lines[first].split()
        fields[5] = "nan"  # TX of the first image
        lines[first] = " ".join(fields)
        (model / "images.txt").write_text("\n".join(lines) + "\n")
    else:
        write_colmap_binary(scene, model)
        data = bytearray((model / "images.bin").read_bytes())
        struct.pack_into("<d", data, 8 + 4 + 4 * 8, float("nan"))  # count, image id, qvec -> TX
        (model / "images.bin").write_bytes(bytes(data))
    message = _load_fails(small_fox)
    assert (
        scene.cameras[0].image_path.name in message
        and "NaN" in message
        and ("images.txt" if kind == "text" else "images.bin") in message
    )


def test_nan_pose_in_llff(fern_dir: Path, tmp_path: Path):
    scene = tmp_path / "fern"
    scene.mkdir()
    poses = np.load(fern_dir / "poses_bounds.npy")
    poses[6, 3] = np.inf
    np.save(scene / "poses_bounds.npy", poses)
    shutil.copytree(fern_dir / "images_8", scene / "images_8")
    message = _load_fails(scene, downscale=8)
    assert "image006.png" in message and "NaN or infinite" in message and "poses_bounds.npy" in message


def test_llff_count_mismatch(fern_dir: Path, tmp_path: Path):
    scene = tmp_path / "fern"
    scene.mkdir()
    np.save(scene / "poses_bounds.npy", np.load(fern_dir / "poses_bounds.npy")[:19])
    shutil.copytree(fern_dir / "images_8", scene / "images_8")
    message = _load_fails(scene, downscale=8)
    assert "images_8" in message and "20 images" in message and "19 poses" in message


def test_empty_folder(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    message = _load_fails(empty)
    assert str(empty) in message and "empty" in message and "transforms.json" in message


def test_not_a_scene_folder(tmp_path: Path):
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "notes.md").write_text("hello")
    message = _load_fails(folder)
    assert str(folder) in message and "not a scene folder" in message and "poses_bounds.npy" in message


def test_folder_of_unposed_photos_points_to_genfusion_poses(small_fox: Path):
    (small_fox / "transforms.json").unlink()
    message = _load_fails(small_fox)
    assert "genfusion poses" in message


def test_missing_path(tmp_path: Path):
    with pytest.raises(GenFusionError, match="does not exist"):
        load_scene(tmp_path / "nowhere")


def test_invalid_json(small_fox: Path):
    (small_fox / "transforms.json").write_text("{ not json")
    message = _load_fails(small_fox)
    assert "transforms.json" in message and "valid JSON" in message


def test_fisheye_transforms_refused(small_fox: Path):
    _edit_json(small_fox, lambda meta: meta.update(camera_model="OPENCV_FISHEYE"))
    message = _load_fails(small_fox)
    assert "OPENCV_FISHEYE" in message and "Undistort" in message
