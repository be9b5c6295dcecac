"""Real sample photos for benchmarks: scikit-image, scikit-learn and matplotlib ship them offline.

Augmented by crops and flips to reach the count asked for (dev extra: scikit-image,
scikit-learn, matplotlib).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from foclip.samples import sample_arrays, short_name


def sample_photos() -> dict[str, np.ndarray]:
    """Every available sample photo (:func:`foclip.samples.sample_arrays`), by short name.

    Raises:
        MissingExtraError: scikit-image is not installed.
    """

    return {short_name(k): v for k, v in sample_arrays().items()}


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
