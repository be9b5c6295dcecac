"""Small datasets for the dataset-scan tests: the sample photos as files, WebDataset tars, parquet.

With ``--import-mode=importlib`` test files cannot import each other: helpers are fixtures here."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

GARBAGE = b"these bytes are not an image"


def write_tar(path: Path, photos: list[Path], prefix: str = "s", extra: dict[str, bytes] | None = None) -> None:
    """A WebDataset shard: each photo as ``<prefix>/<stem>.<ext>`` plus a caption, and ``extra`` members."""
    with tarfile.open(path, "w") as tar:
        for f in photos:
            tar.add(f, arcname=f"{prefix}/{f.stem}.{f.suffix[1:]}")
            _add(tar, f"{prefix}/{f.stem}.txt", b"a caption")
        for name, data in (extra or {}).items():
            _add(tar, name, data)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_parquet(path: Path, photos: list[Path], nulls: int = 0) -> None:
    """A parquet shard with ``key`` and ``image`` (bytes) columns; ``nulls`` rows without bytes at the end."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = [f"p-{f.stem}" for f in photos] + [f"null-{i}" for i in range(nulls)]
    images = [f.read_bytes() for f in photos] + [None] * nulls
    pq.write_table(pa.table({"key": keys, "image": pa.array(images, pa.binary())}), path)


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to a fraction of its size (a shard a crashed writer left)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture
def dataset(sample_photo_dir, tmp_path) -> dict[str, Path]:
    """The sample photos three ways (a folder, a tar shard, a parquet shard), plus a tar with a corrupt
    member and a truncated tar; every path absolute."""
    root = tmp_path / "data"
    photos_dir = root / "photos"
    shutil.copytree(sample_photo_dir, photos_dir)
    photos = sorted(photos_dir.iterdir())
    shards = root / "shards"
    shards.mkdir()
    write_tar(shards / "web-000.tar", photos, extra={"s/corrupt.jpg": GARBAGE})
    write_parquet(shards / "table-000.parquet", photos, nulls=1)
    write_tar(root / "cut.tar", photos)
    truncate(root / "cut.tar", 0.6)
    return {"root": root, "photos": photos_dir, "shards": shards, "tar": shards / "web-000.tar",
            "parquet": shards / "table-000.parquet", "cut": root / "cut.tar"}


@pytest.fixture
def shard_tools():
    """The dataset writers, for tests that build their own shards."""
    import types

    return types.SimpleNamespace(write_tar=write_tar, write_parquet=write_parquet, truncate=truncate, garbage=GARBAGE)
