"""Decoding: the bad-input corpus gets its own codes; good inputs equal open_clip's eval transform."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from foclip.manifest import PreprocessSpec
from foclip.runtime.decode import ERROR_CODES, DecodeLimits, ItemError, decode_item, load_image

SPEC = PreprocessSpec(image_size=64)
LIMITS = DecodeLimits()


def test_corpus_item(bad_corpus, corpus_codes, corpus_name):
    name = corpus_name
    path = bad_corpus / name
    code = corpus_codes[name]
    if code is None:
        out = decode_item(str(path), name, SPEC, LIMITS)
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
        return
    with pytest.raises(ItemError) as info:
        decode_item(str(path), name, SPEC, LIMITS)
    assert info.value.code == code
    assert info.value.code in ERROR_CODES
    assert name in info.value.message and " | " in info.value.message and "Expected" in info.value.message


def _open_clip_pixels(img: Image.Image, size: int) -> np.ndarray:
    """open_clip's own eval transform with an identity normalisation -> (S, S, 3) in [0, 1]."""
    import open_clip

    t = open_clip.image_transform(size, is_train=False, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return t(img).numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("size", [64, 224])
def test_real_photos_equal_open_clip(sample_photos, size):
    spec = PreprocessSpec(image_size=size)
    for name, arr in sample_photos.items():
        ours = decode_item(arr, name, spec, LIMITS).astype(np.float32) / np.float32(255.0)
        np.testing.assert_array_equal(ours, _open_clip_pixels(Image.fromarray(arr), size), err_msg=name)


def test_converted_modes_equal_open_clip(bad_corpus, good_corpus_name):
    """CMYK, 16-bit, RGBA, palette, GIF, gray, EXIF: as Image.open + exif_transpose + open_clip."""
    name = good_corpus_name
    path = bad_corpus / name
    ours = decode_item(str(path), name, SPEC, LIMITS).astype(np.float32) / np.float32(255.0)
    with Image.open(path) as im:
        ref = _open_clip_pixels(ImageOps.exif_transpose(im), 64)
    np.testing.assert_array_equal(ours, ref)


def test_exif_orientation_applied(bad_corpus):
    img = load_image(str(bad_corpus / "rotated_exif.jpg"), "x", LIMITS)
    with Image.open(bad_corpus / "rotated_exif.jpg") as raw:
        assert raw.size == (640, 427)
    assert img.size == (427, 640)


def test_item_kinds_agree(sample_photo_dir):
    path = min(sample_photo_dir.glob("*.png"))
    data = path.read_bytes()
    with Image.open(path) as im:
        im.load()
        pil = im.copy()
    outs = [decode_item(x, "x", SPEC, LIMITS) for x in (str(path), path, data, memoryview(data), pil, np.asarray(pil))]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("item,code", [
    (np.zeros((10, 10, 3), np.float32), "bad_array"),
    (np.zeros((10, 10, 2), np.uint8), "bad_array"),
    (12345, "unsupported_item"),
    (b"", "empty_file"),
    (b"\x89PNG\r\n\x1a\nxx", "not_an_image"),
])
def test_in_memory_bad_items(item, code):
    with pytest.raises(ItemError) as info:
        decode_item(item, "item-0", SPEC, LIMITS)
    assert info.value.code == code


def test_limits_are_configurable():
    arr = np.zeros((40, 400, 3), np.uint8)
    with pytest.raises(ItemError) as info:
        decode_item(arr, "wide", SPEC, DecodeLimits(max_aspect=5.0))
    assert info.value.code == "extreme_aspect"
    with pytest.raises(ItemError) as info:
        decode_item(arr, "big", SPEC, DecodeLimits(max_pixels=1000))
    assert info.value.code == "too_many_pixels"
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    assert decode_item(buf.getvalue(), "ok", SPEC, LIMITS).shape == (64, 64, 3)
