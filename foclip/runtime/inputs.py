"""Expand command-line inputs (files, folders, globs, ``@list`` files) into image paths, lazily.

Folder and glob scans take files with an image extension, and extension-less files whose header PIL
identifies as an image (a camera dump, a download without a name); hidden files (``.name``) are
ignored. Every other file is skipped and recorded with the reason in a :class:`Skipped`, which the
commands report on stderr (``--strict`` makes a skipped file an error).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from foclip.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
_GLOB_CHARS = set("*?[")


@dataclass
class Skipped:
    """The files folder scans passed over, each with the reason."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def summary(self, shown: int = 3) -> str:
        """``skipped 2 file(s) that are not images: a/README.txt (extension .txt), ...``; "" when none.

        Args:
            shown: how many are named.

        Returns:
            One line.
        """
        if not self.items:
            return ""
        names = ", ".join(f"{path} ({why})" for path, why in self.items[:shown])
        more = f" and {len(self.items) - shown} more" if len(self.items) > shown else ""
        return f"skipped {len(self.items)} file(s) that are not images: {names}{more}"

    def refuse(self, what: str) -> None:
        """Raise when anything was skipped (``--strict``).

        Args:
            what: the inputs, as the message names them (``inputs 'photos/'``).

        Raises:
            InputError: one line naming the first skipped files and why.
        """
        if self.items:
            raise InputError(what, f"hold files that are not images ({self.summary()})",
                             "only image files (or a run without --strict, which skips and reports them)")


def _is_image_file(path: str, name: str) -> str | None:
    """None when a scanned file is read as an image, else why it is skipped."""
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return None
    if ext:
        return f"extension {ext} is not an image type"
    from PIL import Image, UnidentifiedImageError

    try:  # the header only: no pixels are decoded
        with Image.open(path):
            return None
    except Image.DecompressionBombError:
        return None  # an image; the decoder refuses it later with its own error code
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return "no extension, and not an image PIL can identify"


def _take(path: str, skipped: Skipped | None) -> bool:
    why = _is_image_file(path, os.path.basename(path))
    if why is not None and skipped is not None:
        skipped.items.append((path, why))
    return why is None


def _walk(folder: Path, skipped: Skipped | None = None) -> Iterator[str]:
    # os.walk with sorted names: deterministic order, nothing held beyond one folder listing.
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if not name.startswith(".") and _take(path, skipped):
                yield path


def expand_inputs(inputs: Iterable[str], skipped: Skipped | None = None) -> Iterator[str]:
    """Yield image paths from inputs, in order.

    * a folder: every image file below it (recursive, sorted; see the module's note on what is an
      image file);
    * a glob (``*``, ``?``, ``[``; ``**`` recursive): its image-file matches, sorted (a folder match
      is walked);
    * ``@FILE``: one path a line (blank lines and ``#`` comments skipped), each expanded again;
    * anything else is yielded as is, so a missing file becomes a ``not_found`` result instead of
      disappearing.

    Args:
        inputs: the command-line strings.
        skipped: receives the files a folder or glob scan passed over (and why).

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
            yield from expand_inputs((ln for ln in lines if ln and not ln.startswith("#")), skipped)
            continue
        p = Path(raw).expanduser()
        if p.is_dir():
            yield from _walk(p, skipped)
        elif not p.exists() and _GLOB_CHARS & set(raw):
            matches = sorted(glob.glob(str(p), recursive=True))
            if not matches:
                yield raw
            for m in matches:
                if os.path.isdir(m):
                    yield from _walk(Path(m), skipped)
                elif not os.path.basename(m).startswith(".") and _take(m, skipped):
                    yield m
        else:
            yield str(p)


def clean_groups(folder: str | Path, skipped: Skipped | None = None) -> dict[str, list[str]]:
    """Images of a clean-traffic folder by group: each first-level subfolder is a group (its
    images found recursively); images directly in ``folder`` form a group named after it.

    Args:
        folder: e.g. the output of `foclip data wild`, or any folder of clean photos.
        skipped: receives the files passed over (and why).

    Returns:
        ``{group: [paths]}`` (groups and paths sorted; groups without images left out).

    Raises:
        InputError: ``folder`` is not a folder, or holds no image.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputError(f"clean folder {str(folder)!r}", "is not a folder", "a folder of clean images")
    groups: dict[str, list[str]] = {}
    top = [str(p) for p in sorted(root.iterdir())
           if p.is_file() and not p.name.startswith(".") and _take(str(p), skipped)]
    if top:
        groups[root.resolve().name or "clean"] = top
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        found = list(expand_inputs([str(sub)], skipped))
        if found:
            groups[sub.name] = found
    if not groups:
        raise InputError(f"clean folder {str(folder)!r}", "holds no image",
                         f"image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it or its subfolders")
    return groups
