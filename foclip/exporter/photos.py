"""Real photos for parity checks: the sample images that ship inside scikit-image, scikit-learn
and matplotlib (no download)."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from foclip.errors import MissingExtraError


def _skimage(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from skimage import data

        return Image.fromarray(getattr(data, name)())

    return load


def _sklearn(index: int) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from sklearn.datasets import load_sample_images

        return Image.fromarray(load_sample_images().images[index])

    return load


def _matplotlib(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        from matplotlib import cbook

        with cbook.get_sample_data(name) as f:
            return Image.open(f).convert("RGB")

    return load


SOURCES: tuple[tuple[str, Callable[[], Image.Image]], ...] = (
    ("skimage:astronaut", _skimage("astronaut")),
    ("skimage:chelsea", _skimage("chelsea")),
    ("skimage:coffee", _skimage("coffee")),
    ("skimage:rocket", _skimage("rocket")),
    ("sklearn:china", _sklearn(0)),
    ("sklearn:flower", _sklearn(1)),
    ("matplotlib:grace_hopper", _matplotlib("grace_hopper.jpg")),
    ("skimage:immunohistochemistry", _skimage("immunohistochemistry")),
)
MIN_PHOTOS = 4


def parity_photos(limit: int = 8) -> list[tuple[str, Image.Image]]:
    """Up to ``limit`` real RGB photos from the libraries that are installed.

    Args:
        limit: most photos to return.

    Returns:
        ``(source:name, PIL image)`` pairs.

    Raises:
        MissingExtraError: when fewer than four photos can be loaded.
    """
    photos = []
    for name, load in SOURCES:
        if len(photos) >= limit:
            break
        try:
            photos.append((name, load()))
        except (ImportError, OSError, ValueError, AttributeError):  # library or data file missing: next one
            pass
    if len(photos) < min(MIN_PHOTOS, limit):
        raise MissingExtraError("scikit-image (parity photos)", "export")
    return photos
