"""Input shards of a dataset scan and how one shard is read.

A shard is the unit of work, of output and of resumption: one WebDataset ``.tar`` file, one parquet
file, or a chunk of image files (folders, globs, ``@lists``, exactly as ``foclip detect`` expands
them). Reading a shard yields ``(id, item)`` pairs for :meth:`foclip.runtime.Detector.detect_iter`
(bytes or a path, so that the runtime's bounded decode applies to every item) and error rows for
what cannot become an item at all (a tar member over the size limit, a null cell, a shard that
cannot be read past some point). Standard library only, plus pyarrow for parquet shards.
"""

from __future__ import annotations

import glob
import hashlib
import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from foclip.errors import InputError
from foclip.runtime.inputs import IMAGE_EXTENSIONS, expand_inputs

SHARD_SUFFIXES = (".tar", ".parquet")
# The error code of a shard that cannot be read (a truncated tar, a broken parquet file, a missing column).
SHARD_ERROR = "shard_unreadable"
_IMAGE_EXTS = {e.lstrip(".") for e in IMAGE_EXTENSIONS}
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Shard:
    """One unit of work.

    Attributes:
        name: the output's base name (``<name>.parquet``), stable across reruns with the same inputs.
        kind: ``tar`` | ``parquet`` | ``files``.
        path: the shard file (``tar``/``parquet``); for ``files``, the first image path.
        files: the image paths of a ``files`` shard.
    """

    name: str
    kind: str
    path: str
    files: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (shards travel to the actors as rows)."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Shard:
        """The inverse of :meth:`to_json`."""
        return cls(d["name"], d["kind"], d["path"], tuple(d.get("files") or ()))


def _shard_files_of(raw: str) -> tuple[list[str], list[str]]:
    """``(shard files, image inputs)`` of one command-line input (``@lists`` already expanded)."""
    p = Path(raw).expanduser()
    if p.is_file() and p.suffix.lower() in SHARD_SUFFIXES:
        return [str(p)], []
    if p.is_dir():
        shards = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in SHARD_SUFFIXES and f.is_file()
                        and not f.name.startswith("."))
        return shards, [raw]
    if not p.exists() and _GLOB_CHARS & set(raw):
        matches = sorted(glob.glob(str(p), recursive=True))
        if not matches:
            return [], [raw]  # becomes a not_found row, as in `foclip detect`
        shards = [m for m in matches if m.lower().endswith(SHARD_SUFFIXES) and os.path.isfile(m)]
        rest = [m for m in matches if os.path.isdir(m) or m.lower().endswith(IMAGE_EXTENSIONS)]
        return shards, rest
    return [], [raw]


def _flatten(inputs: Iterable[str]) -> Iterator[str]:
    for raw in inputs:
        if raw.startswith("@") and len(raw) > 1:
            path = Path(raw[1:]).expanduser()
            try:
                lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"list file {str(path)!r}", f"cannot be read ({exc.__class__.__name__})",
                                 "a UTF-8 text file with one path a line") from exc
            yield from _flatten(ln for ln in lines if ln and not ln.startswith("#"))
        else:
            yield raw


def _digest(texts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()[:8]


def plan_shards(inputs: Iterable[str], files_per_shard: int = 1000) -> list[Shard]:
    """The shards of a scan, in input order.

    ``.tar`` and ``.parquet`` files (named, globbed, listed or found below a folder) are a shard each;
    every other input is expanded as ``foclip detect`` expands it, and the image paths are cut into
    chunks of ``files_per_shard``. Names are the shard file's stem (with a hash of its path when two
    stems collide) and ``files-<index>-<hash of the chunk's paths>``, so a rerun with the same inputs
    finds the same names.

    Args:
        inputs: the command-line inputs (files, folders, globs, ``@lists``).
        files_per_shard: image files per ``files`` shard.

    Returns:
        The shards (an input that matches nothing becomes a ``not_found`` row of a files shard).

    Raises:
        InputError: ``files_per_shard`` below 1, or an unreadable ``@list``.
    """
    if files_per_shard < 1:
        raise InputError("--shard-size", f"is {files_per_shard}", "a number of image files >= 1")
    shard_files: list[str] = []
    images: list[str] = []
    for raw in _flatten(inputs):
        s, rest = _shard_files_of(raw)
        shard_files += [f for f in s if f not in shard_files]
        images += list(expand_inputs(rest))
    stems = [Path(f).name.rsplit(".", 1)[0] for f in shard_files]
    out = []
    for f, stem in zip(shard_files, stems):
        name = stem if stems.count(stem) == 1 else f"{stem}-{_digest([os.path.abspath(f)])}"
        out.append(Shard(name, "tar" if f.lower().endswith(".tar") else "parquet", f))
    for i in range(0, len(images), files_per_shard):
        chunk = tuple(images[i:i + files_per_shard])
        out.append(Shard(f"files-{i // files_per_shard:05d}-{_digest(chunk)}", "files", chunk[0], chunk))
    return out


@dataclass(frozen=True)
class ReadOptions:
    """How shards are read.

    Attributes:
        max_file_bytes: a tar member or parquet cell larger than this is ``file_too_large`` (tar members
            are refused from their header, before their bytes are read).
        image_column: the parquet column with the image bytes (binary, or a struct with a ``bytes`` field).
        id_column: the parquet column with the ids (default: ``<shard>/<row number>``).
    """

    max_file_bytes: int
    image_column: str = "image"
    id_column: str | None = None


def error_row(item_id: str, code: str, message: str) -> dict[str, Any]:
    """An error result as ``foclip detect`` writes it (before calibration fields are added)."""
    return {"id": item_id, "score_color": None, "score_gray": None, "drop": None, "tampered": None,
            "error": {"code": code, "message": message}}


def _too_large(item_id: str, size: int, limit: int) -> dict[str, Any]:
    return error_row(item_id, "file_too_large", f"{item_id!r} | is {size:,} bytes. Expected at most {limit:,} "
                     "bytes (max_file_bytes).")


def _shard_failed(shard: Shard, exc: BaseException, expected: str) -> dict[str, Any]:
    return error_row(shard.path, SHARD_ERROR, f"shard {shard.path!r} | cannot be read past this point "
                     f"({exc.__class__.__name__}: {exc}). Expected {expected}.")


def read_shard(shard: Shard, opts: ReadOptions, errors: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    """Yield the shard's ``(id, item)`` pairs; rows for what cannot be an item go to ``errors``.

    A shard that breaks while being read (a truncated tar, a corrupt parquet page) ends the generator
    after one ``shard_unreadable`` row naming it; the items read before stay.

    Args:
        shard: the shard.
        opts: limits and parquet columns.
        errors: receives error rows (ready for the output) as they occur.

    Yields:
        ``(id, bytes)`` for tar members and parquet cells, ``(path, path)`` for image files.
    """
    if shard.kind == "files":
        yield from ((p, p) for p in shard.files)
    elif shard.kind == "tar":
        yield from _read_tar(shard, opts, errors)
    else:
        yield from _read_parquet(shard, opts, errors)


def _read_tar(shard: Shard, opts: ReadOptions, errors: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    seen: set[str] = set()
    try:
        # Stream mode: members are read in order and their bytes only when asked, so memory stays at
        # one member whatever the shard's size.
        with tarfile.open(shard.path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, base = os.path.split(member.name)
                if base.startswith("."):
                    continue
                stem, _, ext = base.partition(".")  # WebDataset: __key__ is the name up to the first dot
                if ext.lower().rsplit(".", 1)[-1] not in _IMAGE_EXTS:
                    continue  # captions, json, cls... are not images
                key = f"{folder}/{stem}" if folder else stem
                item_id = key if key not in seen else f"{key}.{ext}"  # a second image of the same sample
                seen.add(key)
                if member.size > opts.max_file_bytes:
                    errors.append(_too_large(item_id, member.size, opts.max_file_bytes))
                    continue
                f = tar.extractfile(member)
                data = f.read() if f is not None else b""
                if len(data) < member.size:
                    raise tarfile.ReadError(f"member {member.name!r} ends after {len(data)} of {member.size} bytes")
                yield item_id, data
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        errors.append(_shard_failed(shard, exc, "a complete tar file (WebDataset shard)"))


def _image_bytes(value: Any) -> bytes | None:
    if isinstance(value, dict):  # Hugging Face datasets' Image feature: {"bytes": ..., "path": ...}
        value = value.get("bytes")
    return value if isinstance(value, (bytes, bytearray)) else None


def _read_parquet(shard: Shard, opts: ReadOptions, errors: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(shard.path)
        names = pf.schema_arrow.names
        wanted = [c for c in (opts.image_column, opts.id_column) if c]
        missing = [c for c in wanted if c not in names]
        if missing:
            errors.append(error_row(shard.path, SHARD_ERROR, f"shard {shard.path!r} | has no column "
                                    f"{missing[0]!r} (columns: {', '.join(names)}). Expected --image-column "
                                    "(image bytes) and --id-column to name columns of every parquet shard."))
            return
        row = 0
        # Small record batches: a parquet row group can hold thousands of images.
        for batch in pf.iter_batches(batch_size=16, columns=wanted):
            images = batch.column(opts.image_column).to_pylist()
            ids = (batch.column(opts.id_column).to_pylist() if opts.id_column
                   else [None] * len(images))
            for value, raw_id in zip(images, ids):
                item_id = str(raw_id) if raw_id is not None else f"{shard.name}/{row}"
                row += 1
                data = _image_bytes(value)
                if data is None:
                    errors.append(error_row(item_id, "empty_file", f"{item_id!r} | has no image bytes in column "
                                            f"{opts.image_column!r}. Expected the bytes of an image file."))
                elif len(data) > opts.max_file_bytes:
                    errors.append(_too_large(item_id, len(data), opts.max_file_bytes))
                else:
                    yield item_id, bytes(data)
    except (pa.ArrowException, OSError) as exc:
        errors.append(_shard_failed(shard, exc, "a readable parquet file"))
