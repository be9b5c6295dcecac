"""Tests of foclip/models/loader.py: names, tags, checkpoint files, seeded random init, frozen eval."""

from __future__ import annotations

import pytest
import torch

from foclip.errors import ModelError
from foclip.models import TINY_MODEL, ImageEncoder, TextEncoder, load_clip


@pytest.fixture(scope="module")
def tiny():
    return load_clip(TINY_MODEL, "random", seed=1)


def _embed(loaded) -> torch.Tensor:
    x = torch.linspace(0, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    with torch.no_grad():
        return ImageEncoder(loaded.model, loaded.preprocess)(x)


def test_unknown_name_lists_close_names():
    with pytest.raises(ModelError, match="ViT-B-32") as exc:
        load_clip("ViT-B-33")
    assert "is not an open_clip model name" in str(exc.value)


def test_bad_tag_names_the_three_choices():
    with pytest.raises(ModelError, match="not a tag of foclip-tiny nor a file") as exc:
        load_clip(TINY_MODEL, "laion9000_e99")
    assert "random" in str(exc.value) and ".safetensors" in str(exc.value)


def test_missing_checkpoint_file():
    with pytest.raises(ModelError, match="does not exist"):
        load_clip(TINY_MODEL, "/nonexistent/weights.safetensors")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_unreadable_checkpoint(tmp_path, suffix):
    bad = tmp_path / f"garbage{suffix}"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ModelError, match="cannot be read"):
        load_clip(TINY_MODEL, str(bad))


def test_checkpoint_of_another_model_does_not_fit(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"not.a.clip.weight": torch.zeros(3)}, path)
    with pytest.raises(ModelError, match="does not fit foclip-tiny"):
        load_clip(TINY_MODEL, str(path))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip(tmp_path, tiny, suffix):
    sd = {k: v.detach().clone().contiguous() for k, v in tiny.model.state_dict().items()}
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    again = load_clip(TINY_MODEL, str(path))
    assert again.pretrained == path.name and not again.random_init
    assert torch.equal(_embed(again), _embed(tiny))


def test_random_init_is_seeded(tiny):
    assert torch.equal(_embed(load_clip(TINY_MODEL, "random", seed=1)), _embed(tiny))
    assert not torch.equal(_embed(load_clip(TINY_MODEL, "random", seed=2)), _embed(tiny))
    assert tiny.pretrained == "random(seed=1)" and tiny.random_init


def test_loaded_model_is_frozen_eval_and_described(tiny):
    assert not tiny.model.training
    assert not any(p.requires_grad for p in tiny.model.parameters())
    assert tiny.preprocess.image_size == 64 and tiny.embed_dim == 32
    tokens = tiny.tokenizer(["a painting", "a photo"])
    with torch.no_grad():
        emb = TextEncoder(tiny.model)(tokens)
    assert emb.shape == (2, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_checkpoint_goes_through_open_clip_load_checkpoint(tmp_path, tiny):
    # open_clip's load_checkpoint interpolates a ViT position embedding trained at another grid size
    # (here 2x2 patches + class token, for the tiny model's 4x4); a plain strict load refuses the shape
    sd = {k: v.detach().clone().contiguous() for k, v in tiny.model.state_dict().items()}
    assert sd["visual.positional_embedding"].shape == (17, 64)
    sd["visual.positional_embedding"] = torch.linspace(-1, 1, 5 * 64).reshape(5, 64)
    path = tmp_path / "grid2.pt"
    torch.save(sd, path)
    got = load_clip(TINY_MODEL, str(path)).model.state_dict()
    assert got["visual.positional_embedding"].shape == (17, 64)
    assert torch.equal(got["visual.positional_embedding"][0], sd["visual.positional_embedding"][0])  # class token
    assert torch.equal(got["visual.conv1.weight"], sd["visual.conv1.weight"])


class _Payload:
    """Unpickling this (without weights_only) would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("force_unsafe_default", [False, True])
def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path, monkeypatch, force_unsafe_default):
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD makes torch.load calls that do not pass weights_only unrestricted
    # (as open_clip's TypeError retry does); foclip's explicit weights_only=True read comes first
    if force_unsafe_default:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": _Payload(marker)}, path)
    with pytest.raises(ModelError, match="cannot be read"):
        load_clip(TINY_MODEL, str(path))
    assert not marker.exists()


def test_empty_state_dict_is_one_line(tmp_path):
    path = tmp_path / "empty.pt"
    torch.save({}, path)
    with pytest.raises(ModelError, match="holds no tensors"):
        load_clip(TINY_MODEL, str(path))


def test_hf_hub_name_fails_fast_offline_in_one_line(monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="cannot be downloaded") as exc:
        load_clip("hf-hub:foclip-tests/never-cached")
    assert "\n" not in str(exc.value) and "hf-hub:foclip-tests/never-cached" in str(exc.value)
    print(f"offline hf-hub refusal: {time.perf_counter() - t0:.2f} s")  # a figure, not a gate


def test_hf_hub_name_with_a_checkpoint_file_is_refused(tmp_path):
    with pytest.raises(ModelError, match="cannot be combined"):
        load_clip("hf-hub:foclip-tests/never-cached", str(tmp_path / "w.safetensors"))


_HUB_LOAD = """
import json, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from foclip.models import TINY_MODEL, ImageEncoder, load_clip
from foclip.models.loader import _CONFIG_DIR

snap = Path(sys.argv[1]) / "models--foclip-tests--tiny" / "snapshots" / ("0" * 40)
snap.mkdir(parents=True)
(snap.parents[1] / "refs").mkdir()
(snap.parents[1] / "refs" / "main").write_text("0" * 40)
tiny = load_clip(TINY_MODEL, "random", seed=1)
save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(snap / "open_clip_model.safetensors"))
cfg = {"model_cfg": json.loads((_CONFIG_DIR / "foclip-tiny.json").read_text()), "preprocess_cfg": {}}
(snap / "open_clip_config.json").write_text(json.dumps(cfg))
hub = load_clip("hf-hub:foclip-tests/tiny")
x = torch.linspace(0, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
with torch.no_grad():
    same = torch.equal(ImageEncoder(hub.model, hub.preprocess)(x), ImageEncoder(tiny.model, tiny.preprocess)(x))
print(json.dumps({"pretrained": hub.pretrained, "random_init": hub.random_init, "same": same,
                  "tokens": list(hub.tokenizer(["a photo"]).shape)}))
"""


def test_hf_hub_name_loads_config_and_weights_from_the_hub_cache(tmp_path):
    # a Hub repository laid out in huggingface_hub's cache, read offline (no network here)
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _HUB_LOAD, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=600 * float(os.environ.get("FOCLIP_TEST_TIMEOUT_SCALE", "1")), check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"pretrained": "hf-hub", "random_init": False, "same": True, "tokens": [1, 77]}


_SIDE_EFFECTS = """
import json, logging, sys
import torch
from safetensors.torch import save_file
from foclip.models import TINY_MODEL, load_clip

torch.manual_seed(123)
before = torch.get_rng_state()
path = sys.argv[1]
save_file({k: v.contiguous() for k, v in load_clip(TINY_MODEL, "random", seed=5).model.state_dict().items()}, path)
load_clip(TINY_MODEL, path)
root = logging.getLogger()
print(json.dumps({"rng_unchanged": torch.equal(before, torch.get_rng_state()), "root_level": root.level,
                  "root_handlers": len(root.handlers), "root_filters": len(root.filters)}))
"""


def test_loading_leaves_the_global_rng_and_logging_as_they_were(tmp_path):
    # a fresh interpreter: no logging configured, so a basicConfig() by anything inside shows up
    import json
    import logging
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _SIDE_EFFECTS, str(tmp_path / "w.safetensors")], capture_output=True,
                         text=True, env=env, timeout=600 * float(os.environ.get("FOCLIP_TEST_TIMEOUT_SCALE", "1")),
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"rng_unchanged": True, "root_level": logging.WARNING, "root_handlers": 0, "root_filters": 0}
