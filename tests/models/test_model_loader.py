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
