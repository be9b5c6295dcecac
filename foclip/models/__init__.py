"""torch + open_clip side: load a CLIP (name + pretrained tag | checkpoint file | random) and wrap it.

Importing this package imports torch and open_clip; ``foclip.runtime`` never imports it. Without
them (a ``foclip[cpu]`` install) the import fails with one line naming the extra to install.
"""

from foclip.errors import require

require("torch", "export")
require("open_clip", "export")

from foclip.models.loader import TINY_MODEL, LoadedClip, load_clip
from foclip.models.preprocess import DifferentiablePreprocess, resize_crop
from foclip.models.wrappers import ImageEncoder, TextEncoder

__all__ = [
    "TINY_MODEL",
    "DifferentiablePreprocess",
    "ImageEncoder",
    "LoadedClip",
    "TextEncoder",
    "load_clip",
    "resize_crop",
]
