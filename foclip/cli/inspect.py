"""`foclip inspect DIR`: show a bundle's manifest and parity summary, and re-check every file hash."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show a bundle's manifest and parity, re-check its file hashes",
                       description="Print a bundle's manifest and parity summary and re-hash every file; exit 1 "
                                   "when a file is missing or changed.")
    p.add_argument("bundle", type=Path, help="bundle folder written by `foclip export`")
    p.set_defaults(func=run)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.7g}"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    return str(v)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from foclip.cli.common import console, err_console
    from foclip.exporter import parity_report
    from foclip.manifest import MANIFEST_NAME, read_manifest, verify_files

    bundle = args.bundle
    m = read_manifest(bundle)
    info = Table(title=f"bundle {bundle}", show_header=False)
    info.add_column("field", style="bold")
    info.add_column("value")
    rows = [
        ("model", m.model_name), ("pretrained", m.pretrained + ("  (RANDOM WEIGHTS)" if m.random_init else "")),
        ("embed dim", m.embed_dim), ("context length", m.context_length),
        ("preprocess", ", ".join(f"{k}={_fmt(v)}" for k, v in m.preprocess.__dict__.items())),
        ("grayscale", ", ".join(f"{k}={_fmt(v)}" for k, v in m.grayscale.items())),
        ("scoring", ", ".join(f"{k}={_fmt(v)}" for k, v in m.scoring.items())),
        ("opset", m.opset), ("schema", m.schema_version), ("created", m.created),
        ("versions", ", ".join(f"{k} {v}" for k, v in m.versions.items())),
        ("tokenizer", m.tokenizer_file),
    ]
    for kind, graphs in (("image encoder", m.image_encoders), ("text encoder", m.text_encoders),
                         ("detect graph", m.detect_graphs)):
        for prec, g in graphs.items():
            io = "; ".join(f"{t.name} {t.dtype} {_fmt(t.shape)}" for t in g.inputs) + " -> " + "; ".join(
                f"{t.name} {t.dtype} {_fmt(t.shape)}" for t in g.outputs)
            rows.append((f"{kind} {prec}", f"{g.file}: {io}"))
    for name, b in m.text_banks.items():
        rows.append((f"text bank {name}", f"{b.count} prompts, {b.embeddings_file}, sha256 {b.prompts_sha256[:16]}…"))
    for e in m.engines:
        rows.append((f"engine {e.encoder} {e.precision}", (f"{e.file} (TensorRT {e.tensorrt_version}, sm "
                     f"{e.compute_capability}, batch {_fmt(e.profile)})")))
    for k, v in rows:
        info.add_row(k, str(v))
    console.print(info)

    try:
        report = parity_report(bundle)
    except ValueError as exc:  # a damaged parity.json: say so, and let the hash check below name it
        err_console.print(f"[yellow]note:[/] parity.json cannot be parsed ({escape(str(exc))})", highlight=False)
        report = None
    if report:
        par = Table(title=f"parity vs PyTorch (scores on 0..{_fmt(report.get('score_scale', 100))}, drop a fraction)")
        for col in ("graph", "min cosine", "gate", "max abs diff", "max |Δscore|", "max |Δdrop|"):
            par.add_column(col, justify="left" if col == "graph" else "right")
        for enc in ("image_encoder", "text_encoder"):
            for prec, r in report.get(enc, {}).items():
                banks = r.get("banks", {}).values()
                ds = max((max(b["max_abs_diff_score_color"], b["max_abs_diff_score_gray"]) for b in banks), default=None)
                dd = max((b["max_abs_diff_drop"] for b in r.get("banks", {}).values()), default=None)
                par.add_row(f"{enc}.{prec}", f"{r['min_cosine']:.7f}", f">= {r.get('gate_min_cosine', '?')}",
                            f"{r['max_abs_diff']:.2e}", "" if ds is None else f"{ds:.2e}",
                            "" if dd is None else f"{dd:.2e}")
        for prec, banks in report.get("detect_graph", {}).items():
            ds = max(b["max_abs_diff_score"] for b in banks.values())
            dd = max(max(s["max_abs_diff_drop"] for s in b["batch_sizes"].values()) for b in banks.values())
            par.add_row(f"detect.{prec}", "-", "", "", f"{ds:.2e}", f"{dd:.2e}")
        console.print(par)
    elif report is not None:
        err_console.print("[yellow]no parity.json in this bundle[/]")

    problems = verify_files(bundle, m)
    listed = set(m.files) | {MANIFEST_NAME}
    extra = sorted(p.relative_to(bundle).as_posix() for p in Path(bundle).rglob("*")
                   if p.is_file() and p.relative_to(bundle).as_posix() not in listed)
    for rel in extra:
        err_console.print(f"[yellow]note:[/] {escape(rel)} is not listed in the manifest (ignored)", highlight=False)
    if problems:
        for rel, why in problems:
            err_console.print(f"[bold red]{escape(rel)}[/]: {why}", highlight=False)
        err_console.print(f"[bold red]error:[/] {escape(str(bundle))} | {len(problems)} of {len(m.files)} files fail their sha256 "
                          "check. Expected the files `foclip export` wrote.", highlight=False)
        return 1
    console.print(f"[green]all {len(m.files)} files match their sha256[/]", highlight=False)
    return 0
