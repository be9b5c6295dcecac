"""Writing outputs: check a destination before any work, write atomically with the user's umask.

``tempfile.mkstemp`` creates files with mode 0600 whatever the umask; a rename keeps that mode, so
outputs written through a temp file would be private to their owner. :func:`atomic_write_bytes`
sets the mode a plain ``open(path, "w")`` would have given (``0666 & ~umask``) before the rename.
Write failures (disk full, read-only folder, quota) become one-line :class:`OutputError`\\ s.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
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


# ----------------------------------------------------------------------------- one writer per output

LOCK_SUFFIX = ".lock"


class OutputBusy(OutputError):
    """Another live run holds the output's lock."""


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of an output: a hidden ``.<name>.lock`` beside it (beside, not inside, so that a
    folder replaced by a rename, as `foclip export` does, keeps one lock).

    Args:
        path: the output file or folder.

    Returns:
        The lock file's path (absolute).
    """
    p = Path(os.path.abspath(Path(path).expanduser()))
    return p.parent / f".{p.name or 'output'}{LOCK_SUFFIX}"


def _missing_chain(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    chain = []
    p = path
    while not p.exists() and p != p.parent:
        chain.append(p)
        p = p.parent
    return chain


class OutputClaim:
    """One writer per output, and nothing left behind by a run that fails.

    Entering takes an exclusive ``fcntl`` lock on :func:`lock_path` (never waits): a second run on the
    same output gets :class:`OutputBusy` naming the holder's PID. The kernel drops the lock when its
    holder dies, however it dies, so the lock file of a killed run is simply taken over. Leaving
    removes the lock file; when the run failed (an exception, Ctrl-C included) it also removes what
    the run created (the output, its ``sidecars`` and missing parent folders), unless
    :meth:`keep` was called because the output already holds work a rerun resumes from. What existed
    before the run is never removed.

    The lock is advisory and held by one open file: take it once per output per process.
    """

    def __init__(self, path: str | os.PathLike[str], subject: str, command: str,
                 sidecars: Iterable[str | os.PathLike[str]] = (),
                 holds_work: Callable[[Path], bool] | None = None) -> None:
        """Describe the claim (nothing happens until it is entered).

        Args:
            path: the output file or folder.
            subject: how the message names it (``--out 'r.jsonl'``).
            command: the command writing it (``foclip detect``), recorded for the refusal message.
            sidecars: files written next to the output (``r.jsonl.meta.json``), removed with it.
            holds_work: asked after a failure whether a new output already holds work a rerun resumes
                from (then it stays, as after :meth:`keep`).
        """
        self.path = Path(os.path.abspath(Path(path).expanduser()))
        self.subject, self.command = subject, command
        self.sidecars = [Path(os.path.abspath(Path(s).expanduser())) for s in sidecars]
        self.lock = lock_path(self.path)
        if self.path.is_dir() and not os.access(self.path.parent, os.W_OK):
            self.lock = self.path / f".foclip{LOCK_SUFFIX}"  # a writable folder in a read-only one (`--out ~`)
        self._fh: Any = None
        self._new: list[Path] = []  # what did not exist before the run, deepest first
        self.holds_work = holds_work

    def __enter__(self) -> OutputClaim:  # noqa: PYI034 - a final class, never subclassed
        self._new = [*_missing_chain(self.path), *(s for s in self.sidecars if not s.exists())]
        try:
            self.lock.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._undo_parents()
            raise output_error(self.lock.parent, exc) from exc
        try:
            self._fh = self._acquire()
        except BaseException:
            self._undo_parents()
            raise
        return self

    def _acquire(self) -> Any:
        import fcntl

        while True:
            try:
                fh = open(self.lock, "a+", encoding="utf-8")  # noqa: SIM115 - held until __exit__
            except OSError as exc:
                raise output_error(self.lock, exc) from exc
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read(200).strip() or "PID unknown"
                fh.close()
                raise OutputBusy(self.subject, f"is being written by another run ({holder}); two writers would "
                                 "mix their results", "that run to finish first, or another output") from None
            try:  # the file may have been removed by its last holder between our open and our lock
                same = os.stat(self.lock).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                fh.seek(0)
                fh.truncate()
                fh.write(f"PID {os.getpid()}, {self.command}\n")
                fh.flush()
                return fh
            fh.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is not None:
                self._undo_outputs()
        finally:
            self._release()
            if exc_type is not None:
                self._undo_parents()

    def _release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.lock)  # while still locked: a run that opened the old file retries on a new one
            self._fh.close()
            self._fh = None

    def _undo_outputs(self) -> None:
        import shutil

        if self.holds_work is not None and self.path.exists() and self._worth_keeping():
            return
        for p in (self.path, *self.sidecars):
            if p not in self._new:
                continue  # it was there before this run
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)  # a folder this run created: everything in it is this run's
                elif p.exists() or p.is_symlink():
                    p.unlink()

    def _worth_keeping(self) -> bool:
        try:
            return bool(self.holds_work(self.path))  # type: ignore[misc]
        except OSError:
            return False

    def _undo_parents(self) -> None:
        for p in self._new:
            if p != self.path and p not in self.sidecars:
                with contextlib.suppress(OSError):
                    p.rmdir()  # a parent folder this run created, only when nothing else was put in it


def holds_files(folder: Path) -> bool:
    """True when ``folder`` holds a file anywhere below it (the work of a resumable run), not only folders.

    Args:
        folder: an output folder.

    Returns:
        Whether a rerun would find something to resume from.
    """
    return any(p.is_file() for p in folder.rglob("*"))
