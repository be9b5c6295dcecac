"""`foclip export`: a CLIP -> a self-verifying ONNX bundle (see docs/export.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from foclip.cli.common import PRETRAINED_HELP, claims_output
from foclip.prompts import builtin_help


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a CLIP to an ONNX bundle with a parity report",
                       description="Export a CLIP's encoders to ONNX (fp32/fp16/int8), embed prompt sets, write "
                                   "the tokenizer and a manifest, and check everything against PyTorch.")
    p.add_argument("--out", required=True, type=Path, help="bundle folder to create (new or empty)")
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name (default ViT-B-32; foclip-tiny for tests)")
    p.add_argument("--pretrained", default=None, help=PRETRAINED_HELP)
    p.add_argument("--prompts", action="append", default=None, metavar="SET[,SET...]",
                   help=f"prompt sets to embed: built-in ({builtin_help()}) or a UTF-8 file, one prompt a "
                        "line (comma-separated or repeated; default artistic)")
    p.add_argument("--precision", default="fp32,fp16,int8",
                   help="image-encoder precisions, comma-separated (fp32 always included; default fp32,fp16,int8)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights, imagenet-N draws and parity prompts")
    p.add_argument("--detect-graph", action="store_true",
                   help="also write the fused detection graph detect.fp32.onnx (and detect.fp16.onnx with fp16; "
                        "a second copy of the image weights)")
    p.add_argument("--no-detect-graph", action="store_true", help=argparse.SUPPRESS)  # the default since 0.2
    p.add_argument("--int8-method", default="dynamic-u8s7",
                   help="how the int8 image encoder is made: dynamic-u8s7 (default; holds on every CPU), "
                        "dynamic-s8 (VNNI CPUs only), dynamic-u8u8, static-qdq (see docs/export.md)")
    p.add_argument("--int8-optimize", action="store_true",
                   help="run ONNX Runtime's transformer optimizer before int8 quantisation")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder (after the new bundle passes)")
    p.set_defaults(func=run)


def split_prompt_specs(values: list[str] | None) -> tuple[str, ...]:
    """``["artistic,imagenet-10", "my file.txt"]`` -> each set once; a value naming an existing file is kept whole.

    Args:
        values: the raw ``--prompts`` values.

    Returns:
        Prompt-set specs in order.
    """
    out: list[str] = []
    for v in values or ["artistic"]:
        parts = [v] if Path(v).expanduser().is_file() else [s.strip() for s in v.split(",")]
        out.extend(s for s in parts if s and s not in out)
    return tuple(out)


def rerun_is_done(cfg, out: Path) -> bool:
    """A rerun into a bundle folder: True when it holds a bundle of these very settings (nothing to do).

    Args:
        cfg: this run's :class:`foclip.exporter.ExportConfig`.
        out: the ``--out`` folder.

    Returns:
        False when ``out`` holds no bundle manifest (the usual checks follow).

    Raises:
        SettingsChanged: the bundle was exported with other settings (each named; ``--force`` replaces it).
    """
    from foclip.cli.common import console
    from foclip.manifest import MANIFEST_NAME
    from foclip.rerun import refuse_changed

    path = out.expanduser() / MANIFEST_NAME
    if not path.is_file():
        return False
    try:
        import json

        old = json.loads(path.read_text(encoding="utf-8")).get("info", {}).get("settings")
    except (OSError, ValueError, AttributeError):
        return False  # not a readable bundle: check_out_dir says the folder is not empty
    if not isinstance(old, dict):
        return False  # a bundle from before settings were kept
    refuse_changed(f"--out {str(out)!r}", "a bundle", old, cfg.settings(), "--force to replace it",
                   same="the same settings (nothing to do)")
    console.print(f"nothing to do: {out} already holds a bundle exported with these settings "
                  "(--force exports it again)", highlight=False)
    return True


@claims_output("foclip export")
def run(args: argparse.Namespace) -> int:
    from foclip.cli.common import require_torch_side

    require_torch_side("foclip export")
    from rich.markup import escape
    from rich.table import Table

    from foclip.cli.common import (
        check_weights_source,
        console,
        err_console,
        random_weights_notice,
        resolve_pretrained,
    )
    from foclip.exporter import ExportConfig, export_bundle
    from foclip.exporter.bundle import check_out_dir

    cfg = ExportConfig(
        model_name=args.model, pretrained=resolve_pretrained(args.model, args.pretrained), prompts=split_prompt_specs(args.prompts),
        precisions=tuple(s.strip() for s in args.precision.split(",") if s.strip()), opset=args.opset,
        seed=args.seed, detect_graph=args.detect_graph and not args.no_detect_graph,
        int8_method=args.int8_method, int8_optimize=args.int8_optimize,
    )
    # Checked before torch and the model load: the output folder and the weights source.
    if not args.force and rerun_is_done(cfg, Path(args.out)):
        return 0
    check_out_dir(Path(args.out).expanduser().absolute(), args.force)
    check_weights_source(cfg.model_name, cfg.pretrained)
    random_weights_notice(cfg.pretrained)
    manifest = export_bundle(cfg, args.out, force=args.force,
                             log=lambda line: err_console.print(f"[dim]{escape(line)}[/]", highlight=False,
                                                                # a log file keeps whole lines
                                                                soft_wrap=not err_console.is_terminal))
    table = Table(title=f"parity with PyTorch ({manifest.model_name}, {manifest.pretrained})")
    for col in ("graph", "min cosine", "max abs diff", "size (MB)"):
        table.add_column(col, justify="left" if col == "graph" else "right")
    for key, fig in manifest.info["parity_summary"].items():
        g = manifest.graphs.get(key)
        size = (args.out / g.file).stat().st_size / 1e6 if g else None
        if key in manifest.info.get("omitted", {}):
            table.add_row(key, f"[bold red]{fig['min_cosine']:.7f}[/]", f"{fig['max_abs_diff']:.2e}", "omitted")
        elif "min_cosine" in fig:
            table.add_row(key, f"{fig['min_cosine']:.7f}", f"{fig['max_abs_diff']:.2e}", f"{size:.1f}" if size else "")
        else:
            table.add_row(key, "-", f"{fig['max_abs_diff_score']:.2e} (score, 0..{manifest.scoring.score_scale:g})", "")
    console.print(table)
    warn_floor(manifest, args.out)
    total = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file()) / 1e6
    omitted = manifest.info.get("omitted", {})
    console.print(f"wrote the bundle folder [bold]{escape(str(args.out))}[/]: {total:.1f} MB on disk, "
                  f"{manifest.info['export_seconds']:.1f} s; "
                  + ("all parity gates passed" if not omitted else f"{len(omitted)} graph(s) left out"), highlight=False)
    if omitted:
        for key, why in omitted.items():
            fix = ("--int8-method dynamic-u8s7 (7-bit weights hold on every CPU) or dynamic-u8u8"
                   if key.endswith("int8") else f"leaving {key.split('.')[-1]} out of --precision")
            err_console.print(f"[bold red]error:[/] {escape(key)} | {escape(why)} It was left out of the bundle; "
                              f"the others are usable. Expected a graph within its gate: try {fix}.", highlight=False)
        return EXIT_PARTIAL
    return 0


def warn_floor(manifest, out: Path) -> None:
    """Warn about each text bank whose reference-set score is near the floor (trained weights only)."""
    from rich.markup import escape

    from foclip.cli.common import err_console
    from foclip.exporter import parity_report
    from foclip.scoring import floor_warning

    if manifest.random_init:  # the random-weights note already says every score is meaningless
        return
    banks = parity_report(out).get("image_encoder", {}).get("fp32", {}).get("banks", {})
    n = len(manifest.reference.photos) if manifest.reference else 0
    for name, fig in banks.items():
        line = floor_warning(name, fig.get("ref_mean_score_color", float("inf")), manifest.scoring.score_scale,
                             f"the bundle's {n} reference photos")
        if line:
            err_console.print(f"[bold yellow]warning:[/] {escape(line)}.", highlight=False, soft_wrap=True)


EXIT_PARTIAL = 4  # bundle written, but a precision missed its parity gate and was left out
