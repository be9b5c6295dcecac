"""Tests of `--pretrained reference` in foclip/models/loader.py (the shipped reference CLIPs)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from foclip.errors import ModelError
from foclip.models import ImageEncoder, load_clip
from foclip.models import loader as loader_mod
from foclip.models.loader import REFERENCE_DIR, REFERENCE_MODELS, reference_checkpoint


@pytest.mark.parametrize("model", REFERENCE_MODELS)
def test_reference_loads_offline_as_a_trained_model(model):
    loaded = load_clip(model, "reference")
    assert loaded.pretrained == "reference" and not loaded.random_init
    assert loaded.preprocess.image_size == 64 and loaded.embed_dim == 128 and loaded.context_length == 32
    # fp16 on disk, fp32 in memory: the weights equal the file's values exactly.
    from safetensors.torch import load_file

    sd = load_file(str(reference_checkpoint(model)))
    key = "visual.proj" if "vit" in model else "visual.attnpool.c_proj.weight"
    assert torch.equal(loaded.model.state_dict()[key], sd[key].float())
    # Not the seeded random init of the same config (what a silent fallback would give).
    rand = load_clip(model, "random", seed=0).model.state_dict()[key]
    assert not torch.allclose(loaded.model.state_dict()[key], rand, atol=1e-2)


@pytest.mark.parametrize("model", REFERENCE_MODELS)
def test_card_sha256_matches_the_shipped_file(model):
    card = json.loads((REFERENCE_DIR / f"{model}.json").read_text())
    path = reference_checkpoint(model)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == card["sha256"]
    assert path.stat().st_size <= 25 * 2**20


def test_reference_embeddings_separate_categories():
    loaded = load_clip("foclip-ref-vit", "reference")
    texts = ["a clip art of food", "a clip art of flags, signs and symbols", "an emoji of grinning face"]
    with torch.no_grad():
        t = torch.nn.functional.normalize(loaded.model.encode_text(loaded.tokenizer(texts)), dim=-1)
    # Distinct concepts do not collapse onto one direction (random towers give ~1.0 here too).
    assert (t @ t.T)[~torch.eye(3, dtype=bool)].max().item() < 0.95


def test_reference_for_another_model_is_one_clear_line():
    with pytest.raises(ModelError, match="has no checkpoint for ViT-B-32") as exc:
        load_clip("ViT-B-32", "reference")
    msg = str(exc.value)
    assert "\n" not in msg and "foclip-ref-vit" in msg and "foclip-ref-rn" in msg
    problem = msg.split(" Expected ", 1)[0]  # the models that have one are named before the fix, too
    assert "only foclip-ref-vit and foclip-ref-rn have one" in problem, msg


def test_missing_reference_file_says_how_to_rebuild(tmp_path, monkeypatch):
    monkeypatch.setattr(loader_mod, "REFERENCE_DIR", tmp_path)
    with pytest.raises(ModelError, match="foclip reference build"):
        load_clip("foclip-ref-rn", "reference")


def test_reference_model_random_init_still_works():
    loaded = load_clip("foclip-ref-rn", "random", seed=0)
    assert loaded.random_init
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert ImageEncoder(loaded.model, loaded.preprocess)(x).shape == (2, 128)
