"""`foclip detect BUNDLE INPUTS... --ray --out DIR`: the dataset-scale half of `foclip detect`.

Shards (WebDataset tars, parquet files, chunks of image files) are scored on Ray Data by one
detector per actor (:mod:`foclip.batch.scan`); each shard's rows land in ``DIR/<shard>.parquet``
(and ``.jsonl`` with ``--format jsonl``), and a rerun skips the shards already written. Exit codes
are ``foclip detect``'s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from foclip.errors import InputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``--ray`` flag group of ``foclip detect``."""
    g = p.add_argument_group("dataset scale (--ray)", "score sharded datasets on Ray Data; needs --out DIR "
                             "(pip install 'foclip[batch]')")
    g.add_argument("--ray", action="store_true",
                   help="run on Ray Data: INPUTS may also be WebDataset .tar shards and parquet files; --out is a "
                        "folder with one parquet file per shard (and a .jsonl with --format jsonl); a rerun "
                        "skips finished shards")
    g.add_argument("--address", default=None, metavar="ADDR", help="with --ray: join this Ray cluster (default: start Ray here)")
    g.add_argument("--actors", type=int, default=None, metavar="N",
                   help="with --ray: detector actors, each with an equal share of the CPUs "
                        "(default: one per node)")
    g.add_argument("--image-column", default="image", metavar="COL",
                   help="with --ray: parquet column holding image bytes (default image)")
    g.add_argument("--id-column", default=None, metavar="COL",
                   help="with --ray: parquet column holding ids (default <shard>/<row>)")
    g.add_argument("--shard-size", type=int, default=1000, metavar="N",
                   help="with --ray: image files (not tar/parquet) per output shard (default 1000)")


def _check(args: argparse.Namespace) -> None:
    if not args.out:
        raise InputError("--ray", "needs --out DIR", "--out naming a folder for the per-shard results")
    if args.format == "csv":
        raise InputError("--format csv", "does not apply with --ray (results are parquet files)",
                         "--format table or jsonl (jsonl also writes a .jsonl file per shard)")
    if args.actors is not None and args.actors < 1:
        raise InputError("--actors", f"is {args.actors}", "a number of actors >= 1")
    if args.threads:
        raise InputError("--threads", "does not apply with --ray (each actor uses one thread per CPU it holds)",
                         "--actors N to share the CPUs")
    if not args.max_file_mb > 0:
        raise InputError("--max-file-mb", f"is {args.max_file_mb:g}", "a size in MiB > 0")
    if args.draft_factor < 0:
        raise InputError("--draft-factor", f"is {args.draft_factor}", "an integer >= 0 (0 = full decode)")


def _refuse_output_inside_inputs(out: str, inputs: list[str]) -> None:
    """An output folder inside an input folder would have its parquet files read as shards by a rerun."""
    from foclip.outputs import OutputError

    target = os.path.realpath(out)
    for raw in inputs:
        if os.path.isdir(raw):
            root = os.path.realpath(raw)
            if target == root or target.startswith(root + os.sep):
                raise OutputError(f"--out {out!r}", f"is inside the input folder {raw!r}; a rerun would read its "
                                  "parquet files as shards", "an output folder outside the inputs")


def _detector_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``Detector.from_bundle`` keyword arguments (JSON-ready: they travel to the actors)."""
    return {"backend": args.backend, "precision": args.precision, "calibration": args.calibration,
            "prompts": args.prompts, "cascade": args.cascade, "batch_size": args.batch, "graph": args.graph,
            "probes": tuple(p.strip() for p in args.probes.split(",") if p.strip()),
            "self_check": not args.no_self_check,
            "limits": {"max_file_bytes": int(args.max_file_mb * 1024 * 1024), "draft_factor": args.draft_factor}}


def run_ray(args: argparse.Namespace, settings_of: Callable[[Any], dict[str, Any]]) -> int:
    """Run ``foclip detect --ray``; the exit code is one of ``foclip detect``'s.

    Args:
        args: the parsed ``foclip detect`` arguments.
        settings_of: ``foclip detect``'s settings of a detector (what ``_meta.json`` records).

    Returns:
        The exit code.

    Raises:
        FoclipError: bad options, bundle, calibration, inputs or output folder; an actor that
            could not load its detector.
    """
    from foclip.batch.scan import OutputFolder, ScanConfig, ShardResult, scan
    from foclip.batch.shards import ReadOptions, plan_shards
    from foclip.cli.common import console, err_console, random_weights_notice
    from foclip.errors import MissingExtraError
    from foclip.outputs import refuse_overwriting_inputs
    from foclip.runtime import Detector
    from foclip.runtime.decode import DecodeLimits

    _check(args)
    for module in ("pyarrow", "ray"):  # say so now, not after the model loaded and the folder was made
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module, "batch")
    shards = plan_shards(args.inputs, args.shard_size)
    if not shards:
        raise InputError(f"inputs {' '.join(args.inputs)!r}", "match no image files, tar or parquet shards",
                         "image files, folders, globs, @lists, WebDataset .tar or parquet files")
    refuse_overwriting_inputs(f"{args.out}/_meta.json", [s.path for s in shards], [args.bundle])
    _refuse_output_inside_inputs(args.out, args.inputs)
    kwargs = _detector_kwargs(args)
    # Checked here, before Ray starts (bundle, calibration, precision, prompts): a bad option fails in
    # seconds with one line; the actors run the self-check on their own machines.
    det = Detector.from_bundle(args.bundle, threads=1, **{**kwargs, "self_check": False,
                                                          "limits": DecodeLimits(**kwargs["limits"])})
    try:
        settings = settings_of(det)
        random_weights_notice(det.manifest.pretrained)
        title = f"foclip detect --ray: {det.manifest.model_name}, {det.config.backend}/{det.config.precision}"
        thresholds = (f"tau_score {det.config.tau_score:.4g} (0..{det.score_scale:g}), tau_drop "
                      f"{det.config.tau_drop:.4g} ({'calibrated' if det.calibrated else 'UNCALIBRATED defaults'})")
    finally:
        det.close()
        del det
    formats = ("parquet", "jsonl") if args.format == "jsonl" else ("parquet",)
    # `foclip detect`'s run holds the output claim on --out (one writer, released by the kernel on a kill).
    folder = OutputFolder(args.out, settings, formats, args.fresh)
    complete = {s.name: folder.complete(s.name) for s in shards}
    done = [s for s in shards if complete[s.name]]
    todo = [s for s in shards if not complete[s.name]]
    results: list[ShardResult] = [folder.read_back(s.name) for s in done]
    if done:
        err_console.print(f"resumed: {len(done)} of {len(shards)} shard(s) already in {args.out} (kept; --fresh "
                          f"scores them again); {len(todo)} to do", highlight=False)
    cfg = ScanConfig(args.bundle, kwargs, ReadOptions(int(args.max_file_mb * 1024 * 1024), args.image_column,
                                                      args.id_column), args.out, formats, args.actors, args.address)
    run = {"scored": 0, "actor_seconds": 0.0, "first": None}
    t0 = time.perf_counter()

    def on_shard(res: ShardResult, seconds: float) -> None:
        results.append(res)
        run["scored"] += res.images
        run["actor_seconds"] += seconds
        if run["first"] is None:  # the steady rate starts once Ray and the actors are up
            run["first"] = (time.perf_counter(), res.images)

    scan(cfg, todo, folder, on_shard)
    run["t_end"] = time.perf_counter()
    run["seconds"] = run["t_end"] - t0
    totals = _totals(results)
    folder.write_meta({"complete": True, "shards": len(shards), "resumed_shards": len(done), **totals,
                       "scored": run["scored"], "seconds": round(run["seconds"], 3),
                       "actor_seconds": round(run["actor_seconds"], 3)})
    return _report(args, title, thresholds, totals, results, run, console, err_console)


def _totals(results: list[Any]) -> dict[str, Any]:
    codes: Counter[str] = Counter()
    for r in results:
        codes.update(r.codes)
    return {"images": sum(r.images for r in results), "flagged": sum(r.flagged for r in results),
            "errors": sum(r.errors for r in results), "error_codes": dict(sorted(codes.items()))}


def _rates(run: dict[str, Any]) -> str:
    """images/s over the run's wall time, after the first shard (Ray and the actors up), per actor."""
    scored, seconds = run["scored"], run.get("seconds", 0.0)
    if not scored or seconds <= 0:
        return "- images/s"
    text = f"{scored / seconds:.1f} images/s (wall, Ray start included"
    t_first, n_first = run["first"]
    if scored > n_first and t_first < run["t_end"]:
        text += f"; {(scored - n_first) / (run['t_end'] - t_first):.1f} after the first shard"
    if run["actor_seconds"] > 0:
        text += f"; {scored / run['actor_seconds']:.1f} per actor while scoring"
    return text + ")"


def _report(args: argparse.Namespace, title: str, thresholds: str, totals: dict[str, Any], results: list[Any],
            run: dict[str, Any], console: Any, err_console: Any) -> int:
    """The final summary (images, flagged, errors, images/s) and the exit code."""
    images, flagged, errors = totals["images"], totals["flagged"], totals["errors"]
    out = console if args.format == "table" else err_console
    out.print(title, highlight=False, markup=False)
    out.print(f"{images} image(s) in {len(results)} shard(s): {flagged} flagged as tampered, "
              f"{images - flagged - errors} clean, {errors} unreadable; {run['scored']} scored in this run at "
              f"{_rates(run)}.", highlight=False, markup=False, soft_wrap=True)
    out.print(f"thresholds: {thresholds}; results: {args.out}/<shard>.parquet, settings in {args.out}/_meta.json",
              highlight=False, markup=False, soft_wrap=True)
    shown = [row for r in results for row in r.unreadable][:10]
    for row in shown:
        err_console.print(f"unreadable ({row['error']['code']}): {row['error']['message']}", highlight=False,
                          markup=False)
    if errors > len(shown):
        err_console.print(f"... and {errors - len(shown)} more unreadable; every row is in {args.out}",
                          highlight=False)
    if images - errors == 0:
        err_console.print("[bold red]error:[/] none of the inputs could be read as an image.", highlight=False)
        return 1
    if args.exit_zero:
        return 0
    return 5 if flagged and errors else 3 if flagged else 4 if errors else 0
