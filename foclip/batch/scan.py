"""A dataset scan on Ray Data: one Detector per actor, a shard per call, one output file per shard.

The pipeline is ``from_items(shards) -> map_batches(ShardScanner, batch_size=1, concurrency=N)``,
consumed by the driver with ``iter_batches`` (streaming execution: at most a few shards are queued
ahead of the actors, so memory stays bounded whatever the dataset's size). Each actor loads and
self-checks its :class:`foclip.runtime.Detector` once, then per call reads one shard, decodes its
items through the runtime's bounded decode (the same limits as ``foclip detect``) and returns the
shard's result rows in one row (JSON lines), so a shard's rows arrive whole whichever blocks Ray
makes. The driver alone writes: ``<shard>.parquet`` (and ``.jsonl``) under the output folder, each to
a temp name then renamed, so a killed run loses only the shards in flight and a rerun skips the
shards whose files exist. ``_meta.json`` holds the settings; a rerun with other settings is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foclip.batch.shards import ReadOptions, Shard, read_shard
from foclip.errors import FoclipError, InputError, require
from foclip.network import ray_address_problem
from foclip.outputs import OutputError, atomic_write_json, output_error

META = "_meta.json"
PARTIAL = ".partial"
FORMATS = ("parquet", "jsonl")


def parquet_schema() -> Any:
    """The parquet row schema: ``foclip detect --out``'s fields plus ``shard``."""
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("score_color", pa.float64()), ("score_gray", pa.float64()),
        ("drop", pa.float64()), ("tampered", pa.bool_()),
        ("error", pa.struct([("code", pa.string()), ("message", pa.string())])),
        ("calibrated", pa.bool_()), ("score_scale", pa.float64()),
        ("probe_scores", pa.map_(pa.string(), pa.float64())), ("probe_drop", pa.float64()),
        ("shard", pa.string()),
    ])


@dataclass(frozen=True)
class ScanConfig:
    """What a scan runs and where it writes.

    Attributes:
        bundle: the bundle folder.
        detector: keyword arguments of :meth:`foclip.runtime.Detector.from_bundle` (without
            ``threads``: each actor uses as many ONNX Runtime threads as it has CPUs).
        read: shard reading options (limits, parquet columns).
        out: the output folder.
        formats: ``parquet`` always, ``jsonl`` too when asked.
        actors: detector actors (None: one per node of a joined cluster, one locally).
        address: a Ray cluster to join (None starts a local Ray in this process).
    """

    bundle: str
    detector: dict[str, Any]
    read: ReadOptions
    out: str
    formats: tuple[str, ...] = ("parquet",)
    actors: int | None = None
    address: str | None = None


@dataclass
class ShardResult:
    """What the driver learns of one finished shard."""

    name: str
    images: int
    flagged: int
    errors: int
    codes: dict[str, int] = field(default_factory=dict)
    unreadable: list[dict[str, Any]] = field(default_factory=list)  # the first few error rows


def count_rows(name: str, rows: list[dict[str, Any]], keep: int = 10) -> ShardResult:
    """Counts of a shard's rows (images, flagged, errors by code, the first error rows)."""
    res = ShardResult(name, len(rows), 0, 0)
    for r in rows:
        err = r.get("error")
        if err:
            res.errors += 1
            res.codes[err["code"]] = res.codes.get(err["code"], 0) + 1
            if len(res.unreadable) < keep:
                res.unreadable.append(r)
        elif r.get("tampered"):
            res.flagged += 1
    return res


class ShardScanner:
    """The Ray Data callable class: one per actor, one Detector each, a shard per call."""

    def __init__(self, bundle: str, detector: dict[str, Any], read: dict[str, Any], threads: int) -> None:
        """Load and self-check the detector once for this actor.

        Args:
            bundle: the bundle folder.
            detector: :meth:`Detector.from_bundle` keyword arguments.
            read: :class:`ReadOptions` fields.
            threads: ONNX Runtime intra-op threads (the actor's CPUs).
        """
        from foclip.runtime import Detector
        from foclip.runtime.decode import DecodeLimits

        kwargs = dict(detector)
        kwargs["limits"] = DecodeLimits(**kwargs["limits"])
        self.det = Detector.from_bundle(bundle, threads=threads, **kwargs)
        self.read = ReadOptions(**read)

    def scan(self, shard: Shard) -> list[dict[str, Any]]:
        """Every result row of one shard (scored items first, then the error rows of the reading)."""
        errors: list[dict[str, Any]] = []
        rows = [{**r.to_dict(), "shard": shard.name} for r in self.det.detect_iter(read_shard(shard, self.read, errors))]
        extra = {"calibrated": self.det.calibrated, "score_scale": self.det.score_scale, "shard": shard.name}
        return rows + [{**e, **extra} for e in errors]

    def __call__(self, batch: Any) -> Any:
        """``batch``: a pyarrow table with a ``shard`` column (JSON); returns one row per shard."""
        import pyarrow as pa

        names, blobs, seconds = [], [], []
        for spec in batch.column("shard").to_pylist():
            shard = Shard.from_json(json.loads(spec))
            t0 = time.perf_counter()
            rows = self.scan(shard)
            names.append(shard.name)
            blobs.append("".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))
            seconds.append(time.perf_counter() - t0)
        return pa.table({"name": names, "rows": pa.array(blobs, pa.binary()), "seconds": seconds})


class OutputFolder:
    """The scan's output folder: settings in ``_meta.json``, a file per shard.

    One writer per folder is the caller's part (`foclip detect` holds a
    :class:`foclip.outputs.OutputClaim` on it for the run).
    """

    def __init__(self, path: str, settings: dict[str, Any], formats: tuple[str, ...], fresh: bool) -> None:
        """Check (or, with ``fresh``, discard) earlier results and sweep what killed writes left.

        Raises:
            OutputError: the folder cannot be written, or holds files of something else.
            SettingsChanged: its results were made with other settings.
        """
        from foclip.outputs import ensure_writable
        from foclip.rerun import refuse_changed

        self.path, self.settings, self.formats = Path(path), settings, formats
        ensure_writable(self.path, folder=True)
        meta = self.path / META
        if meta.is_file():
            try:
                old = json.loads(meta.read_text(encoding="utf-8")).get("settings")
            except (OSError, ValueError, AttributeError):
                old = None
            if not isinstance(old, dict):
                raise OutputError(f"--out {path!r}", f"has a {META} that is not a `foclip detect --ray` one",
                                  "a new folder, or --fresh to replace its results")
            if fresh:
                self._discard()
            else:
                refuse_changed(f"--out {path!r}", "results", old, settings, "--fresh to score every shard again")
        elif any(self.path.glob("*.parquet")):
            raise OutputError(f"--out {path!r}", f"holds parquet files but no {META}",
                              "a new or empty folder for the results")
        for tmp in self.path.glob(f".*{PARTIAL}"):  # files a killed run was writing
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.write_meta({"complete": False})

    def _discard(self) -> None:
        for suffix in FORMATS:
            for f in self.path.glob(f"*.{suffix}"):
                f.unlink()

    def files(self, name: str) -> list[Path]:
        """The output files of a shard."""
        return [self.path / f"{name}.{fmt}" for fmt in self.formats]

    def complete(self, name: str) -> bool:
        """Whether a shard's files all exist (each is renamed into place only when whole)."""
        return all(p.is_file() for p in self.files(name))

    def read_back(self, name: str) -> ShardResult:
        """The counts of a shard finished by an earlier run (from its parquet file)."""
        import pyarrow.parquet as pq

        rows = pq.read_table(self.path / f"{name}.parquet", columns=["id", "tampered", "error"]).to_pylist()
        return count_rows(name, rows)

    def write_shard(self, name: str, blob: bytes) -> ShardResult:
        """Write a shard's rows (JSON lines from an actor) to its files: temp names, fsync, rename."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [json.loads(line) for line in blob.splitlines() if line]
        for fmt, final in zip(self.formats, self.files(name)):
            tmp = final.with_name(f".{final.name}{PARTIAL}")
            try:
                if fmt == "parquet":
                    pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema()), tmp)
                else:
                    tmp.write_bytes(blob)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            except OSError as exc:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise output_error(final, exc) from exc
        # Parquet last: it is what marks the shard complete for a rerun.
        for final in sorted(self.files(name), key=lambda p: p.suffix == ".parquet"):
            os.replace(final.with_name(f".{final.name}{PARTIAL}"), final)
        return count_rows(name, rows)

    def write_meta(self, extra: dict[str, Any]) -> None:
        """``_meta.json``: the settings plus ``extra`` (``complete`` and the run's counts)."""
        atomic_write_json(self.path / META, {**extra, "settings": self.settings})


def _plan_actors(ray: Any, actors: int | None) -> tuple[int, int]:
    """``(actors, CPUs per actor)`` for the cluster Ray is connected to."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
    per_node = [int(n["Resources"]["CPU"]) for n in nodes] or [1]
    total = sum(per_node)
    n = actors or len(per_node)
    if n > total:
        raise InputError("--actors", f"is {n} but the Ray cluster has {total} CPU(s)",
                         "at most one actor per CPU")
    # The most CPUs an actor can have so that n of them fit on the nodes (an actor lives on one node).
    cpus = next(c for c in range(total // n, 0, -1) if sum(p // c for p in per_node) >= n)
    return n, cpus


def _user_error(exc: BaseException) -> FoclipError | None:
    """The FoclipError an actor raised (Ray wraps it), as the one-line error to show."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 10:
        cause = getattr(e, "cause", None)
        if isinstance(cause, FoclipError):
            return FoclipError(cause.subject, cause.problem, cause.expected)
        if isinstance(e, FoclipError) and hasattr(e, "subject") and type(e).__module__.startswith("foclip"):
            return e
        e = e.__cause__ or (cause if isinstance(cause, BaseException) else None)
        seen += 1
    return None


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray connected for the scan: a local instance started in this process, or a joined cluster.

    Raises:
        MissingExtraError: Ray Data or pyarrow is not installed.
    """
    require("pyarrow", "batch")
    ray = require("ray", "batch")
    require("ray.data", "batch")
    if ray.is_initialized():  # a caller's own Ray (tests, notebooks): use it, leave it running
        yield ray
        return
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        problem = ray_address_problem(address)
        if problem is not None:
            raise FoclipError(f"--address {address!r}", f"cannot be joined ({problem})",
                              "the address of a running Ray cluster (`ray start --head` prints it)")
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, TimeoutError, ValueError) as exc:
            raise FoclipError(f"--address {address!r}", f"cannot be joined ({exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no answer'})",
                              "the address of a running Ray cluster (`ray start --head` prints it)") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def scan(cfg: ScanConfig, shards: list[Shard], folder: OutputFolder,
         on_shard: Callable[[ShardResult, float], None]) -> None:
    """Score ``shards`` on Ray Data and write each one's files as it finishes.

    Args:
        cfg: the scan configuration.
        shards: the shards still to do.
        folder: the locked output folder.
        on_shard: called with each written shard's counts and its actor seconds.

    Raises:
        FoclipError: an actor could not load its detector (the cause, in one line).
        OutputError: a shard's files cannot be written.
    """
    if not shards:
        return
    with ray_session(cfg.address) as ray:
        import ray.data

        n, cpus = _plan_actors(ray, cfg.actors)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = False  # a shard goes out when it is done
        ds = ray.data.from_items([{"shard": json.dumps(s.to_json())} for s in shards],
                                 override_num_blocks=len(shards))
        read = {"max_file_bytes": cfg.read.max_file_bytes, "image_column": cfg.read.image_column,
                "id_column": cfg.read.id_column}
        ds = ds.map_batches(
            ShardScanner, batch_size=1, batch_format="pyarrow", num_cpus=cpus,
            # One shard in flight per actor: shards queued on a busy actor would wait while another idles.
            compute=ray.data.ActorPoolStrategy(size=min(n, len(shards)), max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs={"bundle": cfg.bundle, "detector": cfg.detector, "read": read, "threads": cpus})
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for name, blob, seconds in zip(batch.column("name").to_pylist(), batch.column("rows").to_pylist(),
                                               batch.column("seconds").to_pylist()):
                    on_shard(folder.write_shard(name, blob), seconds)
        except FoclipError:
            raise
        except Exception as exc:
            user = _user_error(exc)
            if user is not None:
                raise user from None
            raise

