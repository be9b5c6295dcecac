"""`foclip detect BUNDLE INPUTS...`: grayscale-sensitivity detection over files, folders, globs, @lists.

Prints a verdict per image (every image for small runs; the flagged and unreadable ones plus a
summary for large runs), or one JSON line / CSV row per image with ``--format``. Exit codes are
in :data:`EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from foclip.cli.common import STRICT_HELP, claims_output
from foclip.outputs import output_error

# Like linters: a script can tell "nothing found" from "something found" from "could not run".
EXIT_CODES = {
    0: "every input was scored and none was flagged",
    1: "user error (bad bundle, option or calibration), or no input could be read",
    2: "usage error (unknown option or command)",
    3: "at least one image was flagged as tampered",
    4: "at least one input could not be read (none flagged)",
    5: "at least one image flagged and at least one input unreadable",
}
TABLE_ROWS = 50  # up to this many images: a row each; above: flagged and unreadable rows only
FIELDS = ("id", "score_color", "score_gray", "drop", "tampered", "error_code", "error_message",
          "calibrated", "score_scale")


def add_parser(sub: Any) -> None:
    """Register the ``detect`` sub-command."""
    from foclip.scoring import DEFAULT_PROBES

    p = sub.add_parser(
        "detect", help="detect FoCLIP-manipulated images with an exported bundle (torch-free)",
        description="Score each image and its grayscale copy against the bundle's text bank; "
                    "tampered = score_color >= tau_score and drop >= tau_drop.",
        epilog="exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + ".")
    p.add_argument("bundle", help="bundle folder written by `foclip export`")
    p.add_argument("inputs", nargs="+", help="image files, folders, globs, or @FILE (one path a line)")
    p.add_argument("--backend", default="ort-cpu", help="ort-cpu | ort-cuda | trt (default ort-cpu)")
    p.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8 (must be in the bundle)")
    p.add_argument("--calibration", default=None, help="calibration.json from `foclip calibrate`")
    p.add_argument("--prompts", default=None,
                   help="a text bank of the bundle or a prompt file (default: the bundle's first bank)")
    p.add_argument("--cascade", action="store_true", help="gray pass only where score_color >= tau_score")
    p.add_argument("--batch", type=int, default=32, help="images per encoder call (default 32)")
    p.add_argument("--graph", default="auto", choices=("auto", "encoder", "fused"),
                   help="encoder + numpy scoring, or the bundle's fused detection graph (default auto)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = one per core)")
    p.add_argument("--probes", default=",".join(DEFAULT_PROBES),  # scoring owns the default
                   help="colour-space probes scored in the same encoder call (default gray, the paper's rule); "
                        "several, e.g. gray,hue180,swap-rb, decide on the largest probe drop (calibrate with the "
                        "same --probes)")
    p.add_argument("--max-file-mb", type=float, default=256.0,
                   help="larger files get the error file_too_large instead of being read (default 256)")
    p.add_argument("--draft-factor", type=int, default=4,
                   help="JPEGs at least 2N times the model size on the short side are DCT-scaled while "
                        "decoding to no less than N times it; 0 = always full decode (open_clip's exact path); "
                        "measured cost in docs/runtime.md (default 4)")
    p.add_argument("--no-self-check", action="store_true",
                   help="skip the start-up parity self-check of the graph on this machine (at your own risk)")
    p.add_argument("--format", default="table", choices=("table", "jsonl", "csv"),
                   help=f"stdout: a verdict table (a row per image up to {TABLE_ROWS} images, else the flagged "
                        "and unreadable ones and a summary), or a JSON line / CSV row per image (default table)")
    p.add_argument("--out", default=None,
                   help="also write every result to this file as it comes (CSV when it ends in .csv, else JSON "
                        "lines; FILE.meta.json holds the settings); a rerun skips the inputs already in it")
    p.add_argument("--fresh", action="store_true",
                   help="with --out: discard the results already in the file and score every input again "
                        "(needed when the settings differ from that run's)")
    p.add_argument("--strict", action="store_true", help=STRICT_HELP)
    p.add_argument("--exit-zero", action="store_true",
                   help="exit 0 even when an image is flagged or an input is unreadable (user errors still exit 1)")
    from foclip.cli.detect_ray import add_arguments

    add_arguments(p)  # --ray and its options: dataset scale on Ray Data (foclip/cli/detect_ray.py)
    p.set_defaults(func=run)


def _settings(det: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The settings that define a results file's rows (kept in its ``.meta.json``; a rerun compares them)."""
    return {"bundle_hash": det.bundle.bundle_hash, "backend": det.config.backend, "precision": det.config.precision,
            "graph": det.graph_key, "prompts": det.text_bank.name, "prompts_sha256": det.text_bank.sha256[:12],
            "probes": list(det.config.probes), "cascade": det.config.cascade,
            "tau_score": det.config.tau_score, "tau_drop": det.config.tau_drop,
            "draft_factor": args.draft_factor, "max_file_mb": args.max_file_mb}


class _Prior:
    """A result row read back from an earlier run's --out file (the fields the table and counts use)."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d
        self.id = str(d.get("id"))
        self.error = d.get("error") or None
        self.ok = self.error is None
        self.score_color, self.score_gray, self.drop = d.get("score_color"), d.get("score_gray"), d.get("drop")
        self.tampered = bool(d.get("tampered"))


def _from_csv(row: dict[str, str]) -> dict[str, Any]:
    def num(v: str | None) -> float | None:
        return float(v) if v not in (None, "") else None

    err = {"code": row["error_code"], "message": row.get("error_message") or ""} if row.get("error_code") else None
    return {"id": row["id"], "score_color": num(row.get("score_color")), "score_gray": num(row.get("score_gray")),
            "drop": num(row.get("drop")), "tampered": row.get("tampered") == "True", "error": err,
            "calibrated": row.get("calibrated") == "True", "score_scale": num(row.get("score_scale"))}


class ResultsFile:
    """``detect --out``: rows appended as they come, so that a killed run loses nothing already written.

    The file is written in place (no temp file), one whole line per result, flushed at once; its
    ``<file>.meta.json`` holds the settings that define the rows and ``complete`` (false until the run
    ends). A rerun with the same settings keeps the rows it finds (a line torn by a kill is cut off)
    and scores only the inputs not yet in the file; other settings are refused (``--fresh`` starts over).
    """

    def __init__(self, path: str, settings: dict[str, Any], fresh: bool) -> None:
        """Open ``path`` for appending, after reading back (or, with ``fresh``, removing) earlier rows.

        Raises:
            SettingsChanged: the file holds rows made with other settings.
            OutputError: the file exists but is not a results file of `foclip detect`, or cannot be written.
        """
        from foclip.outputs import OutputError
        from foclip.rerun import refuse_changed

        self.path, self.meta = Path(path), Path(f"{path}.meta.json")
        self.fmt = "csv" if str(path).lower().endswith(".csv") else "jsonl"
        self.settings = settings
        self.prior: list[dict[str, Any]] = []
        if fresh:
            for p in (self.path, self.meta):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        if self.path.is_file() and self.path.stat().st_size:
            try:
                old = json.loads(self.meta.read_text(encoding="utf-8")).get("settings")
            except (OSError, ValueError, AttributeError):
                old = None
            if not isinstance(old, dict):
                raise OutputError(f"--out {path!r}", f"exists and has no {self.meta.name} with the settings of "
                                  "the `foclip detect` run that wrote it", "a new file, or --fresh to replace it")
            refuse_changed(f"--out {path!r}", "results", old, settings, "--fresh to score every input again")
            self.prior = self._read_back()
        try:
            self._write_meta({"complete": False})
            self.fh = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
            self.writer = _Writer(self.fh, self.fmt, header=self.fh.tell() == 0)
        except OSError as exc:
            raise output_error(path, exc) from exc

    def _read_back(self) -> list[dict[str, Any]]:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line torn by a kill: cut it off, its image is scored again
            with open(self.path, "r+b") as f:
                f.truncate(end)
        text = data[:end].decode("utf-8", errors="replace")
        if self.fmt == "csv":
            reader = csv.DictReader(io.StringIO(text))
            if reader.fieldnames and tuple(reader.fieldnames) != FIELDS:
                from foclip.outputs import OutputError

                raise OutputError(f"--out {str(self.path)!r}", "holds CSV columns other than foclip detect's",
                                  "a new file, or --fresh to replace it")
            return [_from_csv(r) for r in reader]
        rows = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                d = json.loads(line)
                if isinstance(d, dict) and "id" in d:
                    rows.append(d)
        return rows

    def _write_meta(self, extra: dict[str, Any]) -> None:
        from foclip.manifest import atomic_write_json

        atomic_write_json(self.meta, {**extra, "settings": self.settings})

    def write(self, d: dict[str, Any]) -> None:
        """Append one result and hand it to the OS (a kill after this loses nothing)."""
        self.writer.write(d)
        self.fh.flush()

    def finish(self, info: dict[str, Any]) -> None:
        """Sync the rows to disk and mark the run complete in the meta file."""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self._write_meta({**info, "complete": True})

    def close(self) -> None:
        """Close without marking complete (an interrupted run; a rerun resumes)."""
        with contextlib.suppress(OSError):  # closing a file on a full disk fails too; report the first error
            self.fh.close()


def _row(d: dict[str, Any]) -> dict[str, Any]:
    """A result dict flattened for CSV (the error split into code and message)."""
    err = d.get("error") or {}
    return {**{k: d.get(k) for k in FIELDS if k in d}, "error_code": err.get("code"), "error_message": err.get("message")}


class _Writer:
    """Writes results as JSON lines or CSV rows to a text stream."""

    def __init__(self, fh: Any, fmt: str, header: bool = True) -> None:
        self.fh, self.fmt = fh, fmt
        self.csv = csv.DictWriter(fh, fieldnames=FIELDS, lineterminator="\n") if fmt == "csv" else None
        if self.csv is not None and header:
            self.csv.writeheader()

    def write(self, d: dict[str, Any]) -> None:
        if self.csv is not None:
            self.csv.writerow(_row(d))
        else:
            self.fh.write(json.dumps(d) + "\n")


def shown_id(path: str) -> str:
    """A path as short as it can be shown: relative to the working folder when it lies below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def common_folder(ids: list[str]) -> str:
    """The folder every shown id lies under ("" when none), so that table rows can be short."""
    parents = [os.path.dirname(shown_id(i)) for i in ids]
    if not parents or any(not p for p in parents):
        return ""
    try:
        root = os.path.commonpath(parents)
    except ValueError:  # absolute and relative mixed
        return ""
    return "" if root in ("", ".", os.sep) else root


def verdict_table(rows: list[Any], title: str) -> Any:
    """A rich table with one row per result: image, scores, drop, verdict (TAMPERED, clean or unreadable).

    Paths are shown relative to the folder they all share, named in the caption.
    """
    from rich.markup import escape
    from rich.table import Table

    root = common_folder([r.id for r in rows])
    caption = f"images under {root}{os.sep}; drop = (score_color - score_gray) / score_color" if root else (
        "drop = (score_color - score_gray) / score_color")
    # The title is printed on its own line by the caller: a table title wraps at the table's width.
    t = Table(caption=escape(caption), caption_justify="left")
    t.add_column("image", overflow="fold", min_width=12)
    t.add_column("score_color", justify="right")
    t.add_column("score_gray", justify="right")
    t.add_column("drop", justify="right")
    t.add_column("verdict", no_wrap=True)
    for r in rows:
        name = shown_id(r.id)
        name = escape(os.path.relpath(name, root) if root else name)
        if not r.ok:
            t.add_row(name, "-", "-", "-", "[yellow]unreadable[/]")  # why: listed under the table
            continue
        gray = "-" if r.score_gray is None else f"{r.score_gray:.3f}"
        drop = "-" if r.drop is None else f"{r.drop:.1%}"
        verdict = "[bold red]TAMPERED[/]" if r.tampered else "clean"
        t.add_row(name, f"{r.score_color:.3f}", gray, drop, verdict)
    return t


def _check_paths_before_loading(args: argparse.Namespace) -> list[str]:
    """Bundle, calibration and inputs checked before the model loads; the inputs expanded once."""
    from foclip.cli.common import close_names, report_skipped, require_paths
    from foclip.errors import InputError
    from foclip.runtime.inputs import Skipped, expand_inputs

    require_paths([args.bundle], "bundle", "a bundle folder written by `foclip export`")
    if args.calibration:
        require_paths([args.calibration], "--calibration", "a calibration.json written by `foclip calibrate`")
    skipped = Skipped()
    paths = list(expand_inputs(args.inputs, skipped))
    report_skipped(skipped, getattr(args, "strict", False), f"inputs {' '.join(args.inputs)!r}")
    if not paths:
        raise InputError(f"inputs {' '.join(args.inputs)!r}", "match no image files",
                         "image files, folders with images, globs or @lists")
    if not any(os.path.exists(p) for p in paths):  # every one a typo: say so before loading anything
        close = close_names(Path(paths[0]))
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise InputError(f"input {paths[0]!r}", f"does not exist{hint}, nor does any other input",
                         "image files, folders with images, globs or @lists")
    return paths


def _holds_rows(path: Path) -> bool:
    """A results file with at least one result row (a CSV's header alone is not work), or a
    ``--ray`` results folder with a finished shard."""
    if path.is_dir():
        return any(path.glob("*.parquet"))
    return path.is_file() and path.read_bytes().count(b"\n") > (1 if path.suffix.lower() == ".csv" else 0)


@claims_output("foclip detect", sidecars=(".meta.json",), holds_work=_holds_rows)
def run(args: argparse.Namespace) -> int:
    """Run detection and print the verdicts; the exit code is one of :data:`EXIT_CODES`."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from foclip.cli.common import console, ensure_writable, err_console, random_weights_notice
    from foclip.cli.progress import make_progress
    from foclip.errors import InputError
    from foclip.runtime import Detector
    from foclip.runtime.decode import DecodeLimits

    if args.ray:
        from foclip.cli.detect_ray import run_ray

        return run_ray(args, lambda det: _settings(det, args))
    paths = _check_paths_before_loading(args)
    if not args.max_file_mb > 0:
        raise InputError("--max-file-mb", f"is {args.max_file_mb:g}", "a size in MiB > 0")
    if args.draft_factor < 0:
        raise InputError("--draft-factor", f"is {args.draft_factor}", "an integer >= 0 (0 = full decode)")
    if args.fresh and not args.out:
        raise InputError("--fresh", "only applies with --out", "--out FILE --fresh")
    if args.out:
        from foclip.outputs import refuse_overwriting_inputs

        refuse_overwriting_inputs(args.out, [*paths, *([args.calibration] if args.calibration else [])], [args.bundle])
        ensure_writable(args.out)  # before loading anything: a read-only folder fails in a second
    det = Detector.from_bundle(args.bundle, backend=args.backend, precision=args.precision,
                               calibration=args.calibration, prompts=args.prompts, cascade=args.cascade,
                               batch_size=args.batch, graph=args.graph, threads=args.threads,
                               probes=tuple(p.strip() for p in args.probes.split(",") if p.strip()),
                               self_check=not args.no_self_check,
                               limits=DecodeLimits(max_file_bytes=int(args.max_file_mb * 1024 * 1024),
                                                   draft_factor=args.draft_factor))
    random_weights_notice(det.manifest.pretrained)
    if not det.calibrated:
        err_console.print(f"[yellow]note:[/] no --calibration: default thresholds tau_score="
                          f"{det.config.tau_score:g}, tau_drop={det.config.tau_drop:g}; results say "
                          "\"calibrated\": false.", highlight=False)
    results = None
    try:
        if args.out:
            results = ResultsFile(args.out, _settings(det, args), args.fresh)
    except BaseException:
        det.close()
        raise
    prior = [_Prior(d) for d in (results.prior if results else [])]
    asked = set(paths)
    prior = [r for r in prior if r.id in asked]  # rows of other inputs stay in the file, uncounted
    done = {r.id for r in prior}
    todo = [p for p in paths if p not in done]
    if prior:
        err_console.print(f"resumed: {len(prior)} of {len(paths)} input(s) already in {args.out} (kept, not "
                          f"scored again; --fresh scores them again); {len(todo)} to do", highlight=False)
    total = len(paths)
    stdout_writer = _Writer(sys.stdout, args.format) if args.format != "table" else None
    codes: Counter[str] = Counter()
    n_ok = n_tampered = 0
    kept: list[Any] = []  # the rows the table shows
    unreadable: list[Any] = []

    def count(r: Any) -> None:
        nonlocal n_ok, n_tampered
        if r.ok:
            n_ok += 1
            n_tampered += bool(r.tampered)
        else:
            codes[r.error["code"]] += 1
            unreadable.append(r)
        if total <= TABLE_ROWS or ((r.tampered or not r.ok) and len(kept) < TABLE_ROWS):
            kept.append(r)

    for r in prior:
        count(r)
    t0 = time.perf_counter()
    # Never over JSON/CSV rows going to stdout; off a terminal, plain lines (foclip.cli.progress).
    show_bar = stdout_writer is None or (err_console.is_terminal and not sys.stdout.isatty())
    try:
        columns = (TextColumn("[bold]detect"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with make_progress(*columns, console=err_console, transient=True, disable=not show_bar) as progress:
            task = progress.add_task("detect", total=len(todo))
            for r in det.detect_iter(todo):
                count(r)
                d = r.to_dict()
                if results is not None:
                    results.write(d)
                if stdout_writer is not None:
                    stdout_writer.write(d)
                progress.advance(task)
        if results is not None:
            results.finish({**det.info(), "images": total, "resumed": len(prior)})
    except BaseException as exc:
        if results is not None:
            results.close()  # what was written stays: a rerun resumes from it
        if isinstance(exc, OSError) and results is not None:
            raise output_error(args.out, exc) from exc
        raise
    finally:
        det.close()
    seconds = time.perf_counter() - t0
    n_bad = sum(codes.values())
    m = det.manifest
    model = f"{m.model_name} ({m.pretrained}{', RANDOM weights' if m.random_init else ''})"
    if stdout_writer is None:
        title = f"foclip detect: {model}, {det.config.backend}/{det.config.precision}"
        if total <= TABLE_ROWS:
            console.print(title, highlight=False, markup=False)
            console.print(verdict_table(kept, title))
        else:
            if kept:
                console.print(f"{title}: flagged and unreadable images", highlight=False, markup=False)
                console.print(verdict_table(kept, title))
            shown = len(kept)
            if n_tampered + n_bad > shown:
                console.print(f"... and {n_tampered + n_bad - shown} more flagged or unreadable; "
                              "--out FILE or --format jsonl lists every image.", highlight=False)
            console.print(summary_table(det, total, n_ok, n_tampered, codes, seconds, args.out, scored=len(todo)))
    if unreadable:  # the reason in full, with the file's name
        for r in unreadable[:10]:
            name = shown_id(r.id)
            message = r.error["message"] if name in r.error["message"] else f"{name}: {r.error['message']}"
            err_console.print(f"unreadable ({r.error['code']}): {message}", highlight=False, markup=False)
        if len(unreadable) > 10:
            err_console.print(f"... and {len(unreadable) - 10} more unreadable inputs", highlight=False)
    cal = "calibrated" if det.calibrated else "UNCALIBRATED defaults"
    rate = f"{len(todo) / seconds:.1f}" if seconds > 0 and todo else "-"
    lines = [f"{total} image(s): {n_tampered} flagged as tampered, {n_ok - n_tampered} clean, {n_bad} unreadable.",
             (f"thresholds ({cal}): tau_score {det.config.tau_score:.4g} (0..{det.score_scale:g}), "
             f"tau_drop {det.config.tau_drop:.4g}; {rate} images/s")]
    sc = det.self_check
    lines.append(f"self-check: {sc.graph} on {sc.backend}, min cosine {sc.min_cosine:.6f} vs gate {sc.gate} "
                 f"({'passed' if sc.passed else 'FAILED'})" if sc else "self-check: skipped (--no-self-check)")
    if args.out:
        lines.append(f"every result in {args.out}; run metadata (bundle, graph, self-check, thresholds) in "
                     f"{args.out}.meta.json")
    if total <= TABLE_ROWS or stdout_writer is not None:
        for line in lines:
            (console if stdout_writer is None else err_console).print(line, highlight=False, markup=False)
    if n_ok == 0:
        err_console.print("[bold red]error:[/] none of the inputs could be read as an image.", highlight=False)
        return 1
    if args.exit_zero:
        return 0
    return 5 if n_tampered and n_bad else 3 if n_tampered else 4 if n_bad else 0


def summary_table(det: Any, total: int, n_ok: int, n_tampered: int, codes: Counter, seconds: float,
                  out: str | None, scored: int | None = None) -> Any:
    """The counts of a large run as a rich table."""
    from rich.table import Table

    table = Table(title=f"foclip detect: {det.manifest.model_name} ({det.manifest.pretrained}), "
                        f"{det.config.backend}/{det.config.precision}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("images", str(total))
    table.add_row("scored", str(n_ok))
    table.add_row("flagged as tampered", f"{n_tampered}" + ("" if det.calibrated else " (uncalibrated thresholds)"))
    table.add_row("unreadable", str(sum(codes.values())))
    for code, count in sorted(codes.items()):
        table.add_row(f"  {code}", str(count))
    scored = total if scored is None else scored  # inputs scored in this run (a resumed run kept the others)
    table.add_row("images/s", f"{scored / seconds:.1f}" if seconds > 0 and scored else "-")
    table.add_row("tau_score / tau_drop", f"{det.config.tau_score:.4g} / {det.config.tau_drop:.4g} "
                                          f"(score 0..{det.score_scale:g}, drop as a fraction)")
    if out:
        table.add_row("results", str(out))
    return table
