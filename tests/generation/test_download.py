"""genfusion download: fast offline failure with placement instructions, hand-placed files, fetching."""

from __future__ import annotations

import socket
import time

import pytest

from genfusion.errors import GenFusionError
from genfusion.generation import download
from genfusion.generation.download import (
    ALL_FILES,
    CHECKPOINT,
    download_and_convert,
    missing_files,
    offline_reason,
)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails at once, and any download attempt fails the test."""

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    def no_download(*args, **kwargs):
        raise AssertionError("hf_hub_download must not be called")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)


@pytest.fixture
def fake_convert(monkeypatch):
    calls = []

    def convert(ckpt, out, **kwargs):
        calls.append((ckpt, out, kwargs))
        return out

    monkeypatch.setattr("genfusion.generation.convert.convert_checkpoint", convert)
    return calls


def test_hf_hub_offline_fails_at_once_with_placement_list(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("no probe when offline"))
    cache = tmp_path / "downloads"
    start = time.perf_counter()
    with pytest.raises(GenFusionError) as err:
        download_and_convert(tmp_path / "out", cache)
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    assert "HF_HUB_OFFLINE" in message
    for f in ALL_FILES:
        assert str(f.local_path(cache)) in message and f.repo_id in message
    assert "epoch=59-step=34000.ckpt" in message and "convert-checkpoint" in message
    assert not cache.exists() and not (tmp_path / "out").exists()  # nothing half-written


def test_blocked_network_fails_fast(tmp_path, no_network):
    start = time.perf_counter()
    with pytest.raises(GenFusionError, match=r"cannot reach huggingface\.co:443") as err:
        download_and_convert(tmp_path / "out", tmp_path / "cache", checkpoint_only=True)
    assert time.perf_counter() - start < 2.0
    # only the checkpoint is asked for with --checkpoint-only
    assert "ldm3d-4c" not in str(err.value) and CHECKPOINT.filename in str(err.value)


def test_offline_reason_respects_hf_endpoint(monkeypatch):
    seen = []

    def probe(address, timeout):
        seen.append((address, timeout))
        raise OSError("refused")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example:8080")
    monkeypatch.setattr(socket, "create_connection", probe)
    assert "mirror.example:8080" in offline_reason(timeout=0.5)
    assert seen == [(("mirror.example", 8080), 0.5)]


def test_hand_placed_files_are_converted_without_network(tmp_path, no_network, fake_convert):
    cache = tmp_path / "cache"
    for f in ALL_FILES:
        f.local_path(cache).parent.mkdir(parents=True, exist_ok=True)
        f.local_path(cache).write_bytes(b"placed by hand")
    assert missing_files(cache, ALL_FILES) == []
    out = download_and_convert(tmp_path / "out", cache, trust_checkpoint=True)
    assert out == tmp_path / "out"
    ckpt, target, kwargs = fake_convert[0]
    assert ckpt == cache / "GenFusion-GenerationModel" / "epoch=59-step=34000.ckpt"
    assert target == tmp_path / "out" and kwargs["trust_pickle"] is True


def test_missing_files_are_fetched_into_the_cache(tmp_path, monkeypatch, fake_convert):
    fetched = []

    def fake_download(repo_id, filename, local_dir):
        fetched.append((repo_id, filename))
        path = local_dir / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        return str(path)

    monkeypatch.setattr(download, "offline_reason", lambda timeout: None)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    cache = tmp_path / "cache"
    CHECKPOINT.local_path(cache).parent.mkdir(parents=True)
    CHECKPOINT.local_path(cache).write_bytes(b"already here")
    download_and_convert(tmp_path / "out", cache)
    assert ("Sibo2rr/GenFusion-GenerationModel", "epoch=59-step=34000.ckpt") not in fetched
    assert ("Intel/ldm3d-4c", "vae/diffusion_pytorch_model.safetensors") in fetched
    assert ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "open_clip_pytorch_model.bin") in fetched
    assert missing_files(cache, ALL_FILES) == [] and len(fake_convert) == 1


def test_failed_download_names_the_file(tmp_path, monkeypatch):
    def broken(repo_id, filename, local_dir):
        raise RuntimeError("HTTP 503")

    monkeypatch.setattr(download, "offline_reason", lambda timeout: None)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", broken)
    with pytest.raises(GenFusionError, match="epoch=59-step=34000.ckpt failed .*HTTP 503"):
        download_and_convert(tmp_path / "out", tmp_path / "cache", checkpoint_only=True)


def test_complete_output_is_left_alone(tmp_path, no_network, fake_convert, monkeypatch):
    monkeypatch.setattr("genfusion.generation.repairer.checkpoint_problems", lambda folder: [])
    assert download_and_convert(tmp_path / "out", tmp_path / "cache") == tmp_path / "out"
    assert fake_convert == []
