"""Fixtures for foclip_train tests: the tiny random-init CLIP and its artistic text bank."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny():
    """(LoadedClip, TextBank) for foclip-tiny with random weights (seed 0) and the artistic prompts."""
    from foclip.models import load_clip
    from foclip.prompts import load_prompt_set
    from foclip_train.text_bank import build_text_bank

    loaded = load_clip("foclip-tiny", "random", seed=0)
    return loaded, build_text_bank(loaded, load_prompt_set("artistic"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny):
    from foclip.models import ImageEncoder

    loaded, _ = tiny
    return ImageEncoder(loaded.model, loaded.preprocess)


@pytest.fixture(scope="session")
def photo_tensors(sample_photos):
    """The skimage photos as uint8 (3, H, W) tensors at their own sizes."""
    return {k: torch.from_numpy(v.copy()).permute(2, 0, 1).contiguous() for k, v in sample_photos.items()}
