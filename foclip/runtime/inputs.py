"""Expand command-line inputs (files, folders, globs, ``@list`` files) into image paths, lazily."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from foclip.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
_GLOB_CHARS = set("*?[")


def _walk(folder: Path) -> Iterator[str]:
    # os.walk with sorted names: deterministic order, nothing held beyond one folder listing.
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                yield os.path.join(root, name)


def expand_inputs(inputs: Iterable[str]) -> Iterator[str]:
    """Yield image paths from inputs, in order.

    * a folder: every image file below it (extensions :data:`IMAGE_EXTENSIONS`, recursive, sorted);
    * a glob (``*``, ``?``, ``[``; ``**`` recursive): its image-file matches, sorted (a folder match
      is walked);
    * ``@FILE``: one path a line (blank lines and ``#`` comments skipped), each expanded again;
    * anything else is yielded as is, so a missing file becomes a ``not_found`` result instead of
      disappearing.

    Args:
        inputs: the command-line strings.

    Yields:
        Paths as strings.

    Raises:
        InputError: a ``@list`` file that cannot be read.
    """
    for raw in inputs:
        if raw.startswith("@") and len(raw) > 1:
            path = Path(raw[1:]).expanduser()
            try:
                with open(path, encoding="utf-8") as f:
                    lines = [ln.strip() for ln in f]
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"list file {str(path)!r}", f"cannot be read ({exc.__class__.__name__})",
                                 "a UTF-8 text file with one image path a line") from exc
            yield from expand_inputs(ln for ln in lines if ln and not ln.startswith("#"))
            continue
        p = Path(raw).expanduser()
        if p.is_dir():
            yield from _walk(p)
        elif not p.exists() and _GLOB_CHARS & set(raw):
            matches = sorted(glob.glob(str(p), recursive=True))
            if not matches:
                yield raw
            for m in matches:
                if os.path.isdir(m):
                    yield from _walk(Path(m))
                elif m.lower().endswith(IMAGE_EXTENSIONS):
                    yield m
        else:
            yield str(p)


def clean_groups(folder: str | Path) -> dict[str, list[str]]:
    """Images of a clean-traffic folder by group: each first-level subfolder is a group (its
    images found recursively); images directly in ``folder`` form a group named after it.

    Args:
        folder: e.g. the output of `foclip data wild`, or any folder of clean photos.

    Returns:
        ``{group: [paths]}`` (groups and paths sorted; groups without images left out).

    Raises:
        InputError: ``folder`` is not a folder, or holds no image.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"clean folder {str(folder)!r}", "is not a folder", "a folder of clean images")
    groups: dict[str, list[str]] = {}
    top = sorted(str(p) for p in root.iterdir()
                 if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if top:
        groups[root.resolve().name or "clean"] = top
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        found = list(expand_inputs([str(sub)]))
        if found:
            groups[sub.name] = found
    if not groups:
        raise InputError(f"clean folder {str(folder)!r}", "holds no image",
                         f"image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it or its subfolders")
    return groups
