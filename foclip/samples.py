"""The real photos that ship inside Python packages (offline): the one place that loads them.

scikit-image (``skimage.data``), scikit-learn (``load_sample_images``) and matplotlib
(``cbook.get_sample_data``) each carry a few photos. Export parity, the self-check reference set,
the demo, the benchmarks, ``foclip reproduce`` and the tests all take theirs from here, in one
fixed order, so "the first four sample photos" means the same images everywhere.
"""

from __future__ import annotations

# Lazy imports: scikit-image, scikit-learn and matplotlib are optional: each is imported where its data is read.
from collections.abc import Callable

import numpy as np
from PIL import Image

from foclip.errors import MissingExtraError

MIN_PHOTOS = 4


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        arr = getattr(data, name)()
        return arr[0] if isinstance(arr, tuple) else arr  # stereo pairs: the left image

    return load


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return np.asarray(load_sample_images().images[index], dtype=np.uint8)

    return load


def _matplotlib(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib import cbook

        with cbook.get_sample_data(name) as f:
            return np.asarray(Image.open(f).convert("RGB"))

    return load


# The first eight are the export's parity photos (and the first four its self-check set): keep their order.
SOURCES: tuple[tuple[str, Callable[[], np.ndarray]], ...] = (
    ("skimage:astronaut", _skimage("astronaut")),
    ("skimage:chelsea", _skimage("chelsea")),
    ("skimage:coffee", _skimage("coffee")),
    ("skimage:rocket", _skimage("rocket")),
    ("sklearn:china", _sklearn(0)),
    ("sklearn:flower", _sklearn(1)),
    ("matplotlib:grace_hopper", _matplotlib("grace_hopper.jpg")),
    ("skimage:immunohistochemistry", _skimage("immunohistochemistry")),
    ("skimage:cat", _skimage("cat")),
    ("skimage:hubble_deep_field", _skimage("hubble_deep_field")),
    ("skimage:retina", _skimage("retina")),
    ("skimage:motorcycle_left", _skimage("motorcycle_left")),
)


def sample_arrays(limit: int | None = None) -> dict[str, np.ndarray]:
    """Up to ``limit`` sample photos as uint8 (H, W, 3) RGB arrays, by ``source:name``, in order.

    A photo whose library is missing (or that would need a download) is skipped.

    Raises:
        MissingExtraError: fewer than :data:`MIN_PHOTOS` (or ``limit``) photos could be loaded.
    """
    out: dict[str, np.ndarray] = {}
    for name, load in SOURCES:
        if limit is not None and len(out) >= limit:
            break
        try:
            arr = load()
        except Exception:  # noqa: BLE001, S112 - library or data file missing: take the next photo
            continue
        if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
            out[name] = arr
    if len(out) < min(MIN_PHOTOS, limit or MIN_PHOTOS):
        raise MissingExtraError("scikit-image (sample photos)", "dev")
    return out


def sample_photos(limit: int | None = None) -> list[tuple[str, Image.Image]]:
    """The same photos as PIL images: ``[(source:name, image), ...]`` (see :func:`sample_arrays`)."""
    return [(name, Image.fromarray(arr)) for name, arr in sample_arrays(limit).items()]


def short_name(name: str) -> str:
    """``skimage:astronaut`` -> ``astronaut`` (file names)."""
    return name.split(":", 1)[-1]
