"""Writing outputs: check a destination before any work, write atomically with the user's umask.

``tempfile.mkstemp`` creates files with mode 0600 whatever the umask; a rename keeps that mode, so
outputs written through a temp file would be private to their owner. :func:`atomic_write_bytes`
sets the mode a plain ``open(path, "w")`` would have given (``0666 & ~umask``) before the rename.
Write failures (disk full, read-only folder, quota) become one-line :class:`OutputError`\\ s.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from foclip.errors import FoclipError

_UMASK_LOCK = threading.Lock()


class OutputError(FoclipError):
    """An output file or folder cannot be written (read-only, full disk, permissions)."""


def umask_mode(base: int = 0o666) -> int:
    """``base`` with the process umask applied (the mode ``open()`` would give a new file).

    Returns:
        The permission bits.
    """
    with _UMASK_LOCK:  # os.umask can only be read by setting it; keep the swap atomic among threads
        mask = os.umask(0o022)
        os.umask(mask)
    return base & ~mask


def output_error(path: str | os.PathLike[str], exc: OSError) -> OutputError:
    """A one-line error for a failed write to ``path``.

    Args:
        path: the output being written.
        exc: the error the write raised.

    Returns:
        The :class:`OutputError` to raise.
    """
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied"}.get(exc.errno or -1, exc.strerror or exc.__class__.__name__)
    return OutputError(f"{str(path)!r}", f"cannot be written ({reason})",
                       "a writable folder with free space")


def ensure_writable(path: str | os.PathLike[str], folder: bool = False) -> None:
    """Check, before any work, that ``path`` can be written (creating missing parent folders).

    A temp file is created in the destination folder and removed again, so permissions, read-only
    mounts and a full disk (no inode) show up now rather than after minutes of computing.

    Args:
        path: an output file, or an output folder when ``folder`` is True.
        folder: ``path`` is a folder that will hold the outputs.

    Raises:
        OutputError: the folder cannot be created or written, or ``path`` is an existing folder
            where a file is expected.
    """
    p = Path(path)
    target = p if folder else p.parent
    if not folder and p.is_dir():
        raise OutputError(f"{str(p)!r}", "is a folder", "a file path for the output")
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".foclip-write-check.", dir=target)
        os.close(fd)
        os.unlink(tmp)
    except FileExistsError as exc:
        raise OutputError(f"{str(target)!r}", "exists and is not a folder", "a folder for the outputs") from exc
    except OSError as exc:
        raise output_error(target, exc) from exc


def refuse_overwriting_inputs(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = (),
                              folders: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Refuse an output path that is one of the inputs or lies inside an input folder (a bundle).

    Compared by real path, so a relative spelling, ``..`` or a symlink to the same file is caught.
    The sidecars written next to ``out`` (``<out>.meta.json``) are checked too.

    Args:
        out: the output file.
        inputs: files read by the run (images, a calibration).
        folders: folders whose files the run reads (bundles); nothing inside may be written.

    Raises:
        OutputError: ``out`` (or its sidecar) would replace an input or a file inside a folder.
    """
    targets = {os.path.realpath(out), os.path.realpath(f"{out}.meta.json")}
    for folder in folders:
        root = os.path.realpath(folder)
        if any(t == root or t.startswith(root + os.sep) for t in targets):
            raise OutputError(f"--out {str(out)!r}", f"is inside the bundle {str(folder)!r}; writing it would "
                              "change the bundle", "an output path outside the bundle folder")
    for item in inputs:
        if os.path.realpath(item) in targets:
            raise OutputError(f"--out {str(out)!r}", f"is the input {str(item)!r}; writing it would replace "
                              "that input", "an output path that is not one of the inputs")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename, with the umask's mode.

    Args:
        path: the destination (parent folders are created).
        data: the bytes.

    Raises:
        OutputError: the write failed (the temp file is removed; ``path`` is untouched).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), umask_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise output_error(path, exc) from exc
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def _remove(tmp: str | None) -> None:
    if tmp and os.path.exists(tmp):
        try:
            os.unlink(tmp)
        except OSError:
            pass
