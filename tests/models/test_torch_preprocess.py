"""Tests of foclip/models/preprocess.py: the differentiable resize/crop vs open_clip's eval transform."""

from __future__ import annotations

import open_clip
import pytest
import torch
from PIL import Image

from foclip.models import DifferentiablePreprocess, ImageEncoder, load_clip, resize_crop
from foclip.models.preprocess import center_crop_box, resized_hw


@pytest.mark.parametrize("size", [64, 224])
def test_resize_crop_matches_open_clip_eval_transform_on_photos(sample_photos, size):
    # open_clip's eval transform without normalisation: resize shortest side (PIL bicubic), centre crop.
    ref_tf = open_clip.image_transform(size, is_train=False, mean=(0, 0, 0), std=(1, 1, 1))
    for name, arr in sample_photos.items():
        ref = ref_tf(Image.fromarray(arr))
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255
        out = resize_crop(x, size)[0]
        assert out.shape == ref.shape == (3, size, size), name
        # PIL rounds to 8 bits (between its two passes too); torch stays in float.
        assert (out - ref).abs().mean() < 0.5 / 255, name


def test_resize_crop_embeddings_match_open_clip_preprocessing(sample_photos):
    loaded = load_clip("foclip-tiny", "random")
    enc = ImageEncoder(loaded.model, loaded.preprocess)
    ref_tf = open_clip.image_transform(64, is_train=False, mean=(0, 0, 0), std=(1, 1, 1))
    pre = DifferentiablePreprocess(loaded.preprocess)
    for name, arr in sample_photos.items():
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            cos = (enc(pre(x)) * enc(ref_tf(Image.fromarray(arr))[None])).sum().item()
        assert cos > 0.9999, name


def test_resize_crop_passes_gradients_to_every_contributing_pixel():
    x = torch.rand(1, 3, 90, 120, requires_grad=True)
    resize_crop(x, 32).sum().backward()
    assert x.grad is not None
    # Shortest side 90 -> 32, long side 120 -> 42, crop 5 columns each side: the centre columns all get gradient.
    assert (x.grad[..., 20:100].abs() > 0).all()


@pytest.mark.parametrize("h,w,size,hw,box", [(300, 451, 224, (224, 336), (0, 56)), (640, 427, 224, (335, 224), (56, 0)),
                                             (64, 64, 64, (64, 64), (0, 0)), (10, 20, 64, (64, 128), (0, 32))])
def test_resize_and_crop_geometry(h, w, size, hw, box):
    assert resized_hw(h, w, size) == hw
    assert center_crop_box(*hw, size) == box
    assert resize_crop(torch.rand(1, 3, h, w), size).shape == (1, 3, size, size)
