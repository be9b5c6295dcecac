"""Real sample photos for benchmarks: scikit-image, scikit-learn and matplotlib ship them offline.

Augmented by crops and flips to reach the count asked for (dev extra: scikit-image,
scikit-learn, matplotlib).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field",
                  "immunohistochemistry", "retina", "motorcycle_left")


def sample_photos() -> dict[str, np.ndarray]:
    """The available sample photos as uint8 RGB arrays, by name.

    Returns:
        name -> (H, W, 3) uint8.

    Raises:
        MissingExtraError: scikit-image is not installed.
    """
    from foclip.errors import require

    data = require("skimage.data", "dev")
    photos: dict[str, np.ndarray] = {}
    for name in SKIMAGE_PHOTOS:
        fn = getattr(data, name, None)
        if fn is None:
            continue
        try:
            arr = fn()
        except Exception:  # noqa: BLE001, S112 - some skimage images need pooch downloads; skip them
            continue
        if isinstance(arr, tuple):  # stereo pairs
            arr = arr[0]
        if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
            photos[name] = arr
    try:
        from sklearn.datasets import load_sample_images

        for fname, img in zip(load_sample_images().filenames, load_sample_images().images):
            photos[Path(fname).stem] = np.asarray(img, dtype=np.uint8)
    except ImportError:
        pass
    try:
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
            photos["grace_hopper"] = np.asarray(im.convert("RGB"))
    except (ImportError, OSError):
        pass
    return photos


def write_sample_images(out_dir: str | Path, count: int, seed: int = 0) -> list[Path]:
    """Write ``count`` JPEGs: the sample photos, then random crops (50-100 % side) and flips of them.

    Args:
        out_dir: target folder (created).
        count: number of files.
        seed: seed of the crops.

    Returns:
        The files written, sorted.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    photos = list(sample_photos().items())
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        name, arr = photos[i % len(photos)]
        if i >= len(photos):
            h, w = arr.shape[:2]
            f = rng.uniform(0.5, 1.0)
            ch, cw = max(32, int(h * f)), max(32, int(w * f))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            arr = arr[y:y + ch, x:x + cw]
            if rng.random() < 0.5:
                arr = arr[:, ::-1]
        p = out / f"{i:04d}_{name}.jpg"
        Image.fromarray(np.ascontiguousarray(arr)).save(p, quality=92)
        paths.append(p)
    return sorted(paths)
