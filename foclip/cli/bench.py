"""`foclip bench generate|detect`: benchmarks that print figures (ratios against a baseline run side by side).

The measuring lives in the library (:mod:`foclip.benchmarks.detect`, :mod:`foclip_train.bench`);
this module parses options and draws the tables. Like every command module it imports the
measuring code inside ``run_*``: ``foclip --help`` imports every command module and stays light.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from foclip.benchmarks.cpu import cpu_line
from foclip.cli.common import (
    PRETRAINED_HELP,
    claims_output,
    console,
    err_console,
    random_weights_notice,
    require_paths,
    require_torch_side,
    resolve_pretrained,
)
from foclip.manifest import atomic_write_json, read_manifest
from foclip.outputs import ensure_writable


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: `foclip bench generate`, `foclip bench detect`",
                       description="Benchmarks that print figures side by side with a baseline run in the same process.")
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    _add_detect(bsub)
    if importlib.util.find_spec("foclip_train") is not None:  # the detect benchmark needs no torch side
        _add_generate(bsub)


def _add_generate(bsub) -> None:
    p = bsub.add_parser("generate", help="image-iterations/s of the FoCLIP step vs bare forward+backward",
                        description="Time the FoCLIP attack step against a bare forward+backward pass of the same "
                                    "encoder, in alternating rounds; an estimate is printed after the warm-up.")
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name (default: %(default)s)")
    p.add_argument("--pretrained", default=None, help=PRETRAINED_HELP)
    p.add_argument("--batch", type=int, default=4, help="images per step (default: %(default)s)")
    p.add_argument("--iters", type=int, default=10, help="steps per timed run (default: %(default)s)")
    p.add_argument("--check-every", type=int, default=10, help="best-iterate check interval k (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds, alternating (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch threads, 0 = torch's default (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--no-native", action="store_true", help="skip the native-resolution attack row")
    p.add_argument("--compile", action="store_true",
                   help="add a row with the encoder under torch.compile (inductor), with its distance from eager")
    p.add_argument("--channels-last", action="store_true",
                   help="add a row with the encoder's weights in channels-last memory format")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    """Run ``foclip bench generate`` and print its table."""

    require_torch_side("foclip bench generate")
    from foclip_train.bench import BenchGenerateConfig, measure_generate

    cfg = BenchGenerateConfig(args.model, resolve_pretrained(args.model, args.pretrained), args.batch, args.iters, args.check_every, args.rounds,
                              args.threads, args.device, not args.no_native, args.compile, args.channels_last)
    from foclip.cli.progress import estimate_line

    res = measure_generate(cfg, on_loaded=random_weights_notice, on_estimate=lambda left: console.print(estimate_line(
        f"bench generate, {cfg.rounds} round(s) x {cfg.iters} steps x batch {cfg.batch}", left), highlight=False,
        soft_wrap=True))
    t = Table(title=f"foclip bench generate: {cfg.model} ({res['pretrained']}), batch {cfg.batch}, "
                    f"{cfg.iters} iters, k={cfg.check_every}, {cfg.device}, {res['threads']} threads, "
                    f"median of {cfg.rounds}")
    for col in ("path", "image-iters/s", "s per step", "vs bare"):
        t.add_column(col, justify="right" if col != "path" else "left")
    for r in res["rows"]:
        t.add_row(r["path"], f"{r['image_iters_per_s']:.2f}", f"{r['s_per_step']:.3f}", f"{r['vs_bare']:.2f}x")
    console.print(t)
    for r in res["rows"]:
        if "vs_eager_attack" in r:
            console.print(f"{r['path']}: {r['vs_eager_attack']:.2f}x the eager attack step; largest difference from "
                          f"eager after {cfg.iters} steps: {r['max_pixel_diff_vs_eager']} 8-bit level(s), score "
                          f"{r['max_score_diff_vs_eager']:.2e}; first call {r['first_call_s']:.1f} s",
                          highlight=False)
    console.print(cpu_line(res["cpu"]), highlight=False)
    console.print(f"overhead of the attack step over bare forward+backward: {res['overhead_pct']:+.1f} % "
                  f"(of which ~{res['check_share_pct']:.1f} % is {res['checks']} best-iterate checks, one forward "
                  f"each; {res['checks']}/{cfg.iters} checks here, ~1/k of a forward per step in long runs)",
                  highlight=False)
    return 0


def _add_detect(bsub) -> None:
    p = bsub.add_parser("detect", help="runtime detection vs PyTorch eager open_clip (one process)",
                        description="Detections/s of the torch-free runtime (each precision and path) against PyTorch "
                                    "eager open_clip on the same photos, in one process (docs/runtime.md).")
    p.add_argument("bundle", help="bundle folder written by `foclip export`")
    p.add_argument("images", nargs="*", help="image files, folders, globs or @lists (default: --samples)")
    p.add_argument("--samples", type=int, default=48,
                   help="without IMAGES: write this many sample photos (skimage/sklearn/matplotlib, "
                        "with crops and flips) to a temp folder (default 48)")
    p.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved timed rounds; median reported (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch and ORT intra-op threads (0 = cores)")
    p.add_argument("--decode-workers", type=int, default=2, help="runtime decode threads (default 2)")
    p.add_argument("--clean-fraction", type=float, default=0.9,
                   help="cascade row: fraction of images below tau_score (default 0.9)")
    p.add_argument("--calibration", default=None, help="use these thresholds instead of bench-derived ones")
    p.add_argument("--checkpoint", default=None, help="weights for the baseline when the bundle's model "
                                                      "came from a checkpoint file")
    p.add_argument("--skip-torch", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--probes", default="gray,hue180,swap-rb",
                   help="probes of the multi-probe row (f), comma-separated; 'gray' alone drops the row")
    p.add_argument("--compare", action="append", default=[], metavar="BUNDLE",
                   help="another bundle of the same model exported with a different --int8-method: its int8 "
                        "rows join the same rounds (repeatable)")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    p.set_defaults(func=run_detect)


@claims_output("foclip bench detect")
def run_detect(args: argparse.Namespace) -> int:
    """Run ``foclip bench detect`` and print its table."""

    from foclip.benchmarks.detect import BenchDetectConfig, run_bench_detect

    if args.out:  # a folder or an unwritable place fails now, not after the benchmark
        ensure_writable(args.out)
    if args.images:  # a typo fails here, in one line, not as a traceback from the decoder
        from foclip.runtime.inputs import expand_inputs

        require_paths(list(expand_inputs(args.images)) or args.images, "image", "image files, folders, globs or @lists")
    random_weights_notice(read_manifest(args.bundle).pretrained)
    cfg = BenchDetectConfig(
        bundle=args.bundle, images=tuple(args.images), samples=args.samples, batch=args.batch, repeat=args.repeat,
        threads=args.threads, decode_workers=args.decode_workers, clean_fraction=args.clean_fraction,
        calibration=args.calibration, checkpoint=args.checkpoint, skip_torch=args.skip_torch,
        probes=tuple(p.strip() for p in args.probes.split(",") if p.strip()), compare=tuple(args.compare))
    res = run_bench_detect(cfg, log=lambda line: err_console.print(f"[dim]{escape(line)}[/]", highlight=False))
    table = Table(title=f"foclip bench detect — {res.model_name} ({res.pretrained}), {res.images} images, "
                        f"batch {res.batch}, {res.threads} threads")
    for col in ("row", "det/s", "vs (a)", "decode/enc", "gray", "agree", "agree drop", "max|Δscore|"):
        table.add_column(col, justify="right" if col != "row" else "left")
    for f in res.figures:
        work = f["decode_prep_s"] + f["encoder_s"]
        share = f"{f['decode_prep_s'] / work:.0%} / {f['encoder_s'] / work:.0%}" if work > 0 else "-"
        scored = f["agreement_gated"] is not None
        agree = ((f"{f['agreement_gated']:.1%}",
                  "-" if f["agreement_drop_median"] is None else f"{f['agreement_drop_median']:.1%}",
                  f"{f['max_abs_score_diff']:.1e}") if scored else ("-", "-", "-"))
        table.add_row(escape(f["row"]), f"{f['detections_per_s']:.2f}", f"{f['ratio_to_first']:.2f}x", share,
                      f"{f['gray_rows']}/{f['n']}" if scored else "-", *agree)
    Console(width=max(console.width, 132)).print(table)
    console.print("det/s: detections per second from files; decode/enc: share of CPU seconds in decode + "
                  "preprocess vs encoder + scoring; gray: probe rows run (gray passes; N per probe for (f)); "
                  "agree: same tampered decision as the first row (rule with the thresholds below; (f) decides on "
                  "its largest probe drop); agree drop: same side of the first row's median drop; max|Δscore|: "
                  f"largest score_color difference to the first row (0..{res.score_scale:g} scale).", highlight=False)
    for line in res.end_to_end:
        console.print(escape(line), highlight=False)
    console.print(f"thresholds {res.thresholds}: tau_score {res.tau_score:.4g} (0..{res.score_scale:g}), "
                  f"tau_drop {res.tau_drop:.4g}; first row = {escape(res.rows[0].name)}", highlight=False)
    console.print(cpu_line(res.cpu), highlight=False)
    if args.out:
        atomic_write_json(args.out, res.to_dict())
    return 0
