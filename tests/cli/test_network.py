"""Fail fast without a network: the hub probe, offline mode, and `--pretrained` checked before loading."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from foclip import network
from foclip.cli.common import check_weights_source
from foclip.errors import ModelError


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """A hub endpoint on a local port nobody listens on, empty weight caches, offline mode unset."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: connections are refused
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "")  # recorded first, so that a value set by the code under test is undone
        monkeypatch.delenv(var)
    monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(network, "_probe_result", {})
    monkeypatch.setattr(network, "_switched", None)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # recorded now, so the flag is put back after the test
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    return port


def test_unreachable_hub_switches_offline_and_says_why(no_hub):
    reason = network.go_offline_if_unreachable()
    assert reason == f"no network (127.0.0.1:{no_hub} cannot be reached: connection refused)"
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        assert constants.HF_HUB_OFFLINE is True


def test_tag_without_network_or_cache_is_refused_at_once(no_hub, monkeypatch):
    t0 = time.perf_counter()
    with pytest.raises(ModelError) as exc:
        check_weights_source("ViT-B-32", "laion2b_s34b_b79k")
    seconds = time.perf_counter() - t0
    msg = str(exc.value)
    assert msg.startswith("pretrained ViT-B-32/laion2b_s34b_b79k | cannot be downloaded: no network")
    assert "--pretrained reference" in msg and "--pretrained random" in msg and "checkpoint file" in msg
    print(f"refused in {seconds:.3f} s")  # figure for the log, not a gate


def test_cached_weights_are_left_to_the_loader(no_hub, tmp_path):
    (tmp_path / "hf" / "hub" / "models--org--clip").mkdir(parents=True)
    check_weights_source("ViT-B-32", "laion2b_s34b_b79k")  # offline mode set; the loader tries the cache


def test_random_reference_and_files(tmp_path):
    check_weights_source("ViT-B-32", "random")
    check_weights_source("ViT-B-32", "reference")
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"x")
    check_weights_source("ViT-B-32", str(ckpt))
    with pytest.raises(ModelError, match=r"does not exist \(did you mean .*model.safetensors"):
        check_weights_source("ViT-B-32", str(tmp_path / "modle.safetensors"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connections are refused


def test_a_ray_address_where_nothing_listens_is_named_at_once():
    port = _closed_port()
    assert network.ray_address_problem(f"127.0.0.1:{port}") == "connection refused"
    assert network.ray_address_problem(f"ray://127.0.0.1:{port}") == "connection refused"
    assert network.ray_address_problem("127.0.0.1:six") == "its port is not a number"
    assert network.ray_address_problem("auto") is None  # Ray's own lookup of a local cluster


def test_a_listening_ray_address_passes_the_probe():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert network.ray_address_problem(f"127.0.0.1:{s.getsockname()[1]}") is None


@pytest.mark.parametrize("command", ["detect", "serve"])
def test_ray_commands_refuse_an_unreachable_address_in_one_line(command, tiny_bundle, tmp_path, capsys):
    pytest.importorskip("ray")
    from foclip.cli.main import main

    port = _closed_port()
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 40, 40)).save(photos / "red.png")
    argv = {"detect": ["detect", str(tiny_bundle), str(photos), "--ray", "--out", str(tmp_path / "scan")],
            "serve": ["serve", str(tiny_bundle), "--port", str(_closed_port())]}[command]
    if command == "detect":
        pytest.importorskip("pyarrow")
    assert main([*argv, "--address", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"--address '127.0.0.1:{port}'" in err and "cannot be joined (connection refused)" in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "scan").exists()
