"""`foclip inspect DIR [--verify]`: show a bundle's manifest and parity summary, re-check every file
hash, and with ``--verify`` run the bundle's self-check reference set through its graphs on this
machine's backend."""

from __future__ import annotations

import argparse
from pathlib import Path

from foclip.manifest import MANIFEST_NAME, read_manifest, verify_files


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show a bundle's manifest and parity, re-check its file hashes",
                       description="Print a bundle's manifest and parity summary and re-hash every file; exit 1 "
                                   "when a file is missing or changed, or when --verify finds a graph that misses "
                                   "its parity gate on this machine.")
    p.add_argument("bundle", type=Path, help="bundle folder written by `foclip export`")
    p.add_argument("--verify", action="store_true",
                   help="run each graph on this machine against the bundle's PyTorch reference set and "
                        "compare with its gate (exit 1 when one misses it)")
    p.add_argument("--backend", default="ort-cpu", help="backend for --verify (default ort-cpu)")
    p.add_argument("--precision", default=None,
                   help="with --verify: only graphs of this precision (trt: the engine precision)")
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

    bundle = args.bundle
    m = read_manifest(bundle)
    info = Table(title=f"bundle {bundle}", show_header=False)
    info.add_column("field", style="bold")
    info.add_column("value")
    rows = [
        ("model", m.model_name), ("pretrained", m.pretrained + ("  (RANDOM WEIGHTS)" if m.random_init else "")),
        ("embed dim", m.embed_dim), ("context length", m.context_length),
        ("preprocess", ", ".join(f"{k}={_fmt(v)}" for k, v in m.preprocess.__dict__.items())),
        ("grayscale", ", ".join(f"{k}={_fmt(v)}" for k, v in m.grayscale.__dict__.items())),
        ("scoring", ", ".join(f"{k}={_fmt(v)}" for k, v in m.scoring.__dict__.items())),
        ("opset", m.opset), ("schema", m.schema_version), ("created", m.created),
        ("versions", ", ".join(f"{k} {v}" for k, v in m.versions.items())),
        ("tokenizer", f"{m.tokenizer.file} + {m.tokenizer.config_file} ({m.tokenizer.kind})"),
    ]
    for key, g in m.graphs.items():
        io = "; ".join(f"{t.name} {t.dtype} {_fmt(t.shape)}" for t in g.inputs) + " -> " + "; ".join(
            f"{t.name} {t.dtype} {_fmt(t.shape)}" for t in g.outputs)
        quant = f" [{g.quantization.get('method')}: for {g.quantization.get('cpus')}]" if g.quantization else ""
        rows.append((f"graph {key}", f"{g.file}: {io}; gate min cosine {g.gate_min_cosine}{quant}"))
    for key, why in m.info.get("omitted", {}).items():
        rows.append((f"omitted {key}", why))
    if m.reference is not None:
        photos = ", ".join(m.reference.photos)
        rows.append(("self-check set", f"{len(m.reference.photos)} photos ({photos}), {len(m.reference.prompts)} prompts"))
    for name, b in m.text_banks.items():
        rows.append((f"text bank {name}", f"{b.count} prompts, {b.embeddings_file}, sha256 {b.prompts_sha256[:16]}…"))
    for e in m.engines:
        rows.append((f"engine {e.graph}@{e.precision}", (f"{e.file} (TensorRT {e.tensorrt_version}, sm "
                     f"{e.compute_capability}, batch {_fmt(e.profile)}; gate min cosine {e.gate_min_cosine})")))
    for k, v in rows:
        info.add_row(k, str(v))
    console.print(info)

    try:
        report = parity_report(bundle)
    except ValueError as exc:  # a damaged parity.json: say so, and let the hash check below name it
        err_console.print(f"[yellow]note:[/] parity.json cannot be parsed ({escape(str(exc))})", highlight=False)
        report = None
    if report:
        _parity_tables(report, float(report.get("score_scale", m.scoring.score_scale)))
    elif report is not None:
        err_console.print("[yellow]no parity.json in this bundle[/]")

    problems = verify_files(bundle, m)
    from foclip.exporter.engine import LOCK_FILE, TIMING_CACHE

    listed = set(m.files) | {MANIFEST_NAME, TIMING_CACHE, LOCK_FILE}  # a cache and a lock: not artifacts
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
    return _verify(args) if args.verify else 0


def _parity_tables(report: dict, scale: float) -> None:
    """Print the graphs' parity with PyTorch, then their score and drop differences per text bank.

    A bank the reference photos score at the floor on is marked ``*``: its drop difference is the
    absolute one (0..scale), and a footnote says why (:func:`foclip.runtime.parity.floor_note`).
    """
    from rich.table import Table

    from foclip.cli.common import console
    from foclip.runtime.parity import bank_parity, floor_note

    par = Table(title="parity vs PyTorch (the gate: min cosine over every row)")
    for col in ("graph", "min cosine", "gate", "max abs diff"):
        # The graph's key as the manifest names it (image.int8), never cut.
        par.add_column(col, justify="left" if col == "graph" else "right", no_wrap=col == "graph")
    for enc in ("image_encoder", "text_encoder"):
        for prec, r in report.get(enc, {}).items():
            par.add_row(f"{enc.split('_')[0]}.{prec}", f"{r['min_cosine']:.7f}", f">= {r.get('gate_min_cosine', '?')}",
                        f"{r['max_abs_diff']:.2e}")
    console.print(par)
    rows = bank_parity(report, scale)
    if not rows:
        return
    banks = Table(title=f"scores vs PyTorch by text bank (0..{_fmt(scale)}; drop a fraction; * at the floor)")
    for col in ("graph", "bank", "ref score", "max |Δscore|", "max |Δdrop|"):
        banks.add_column(col, justify="left" if col in ("graph", "bank") else "right", no_wrap=col in ("graph", "bank"))
    for r in rows:
        if r.at_floor:
            drop = "-" if r.drop_diff is None else f"{r.drop_diff:.2e} abs"
        else:
            drop = f"{r.drop_diff:.2e}"
        banks.add_row(r.graph, r.bank + (" *" if r.at_floor else ""),
                      "" if r.ref_score is None else f"{r.ref_score:.2f}", f"{r.max_abs_diff_score:.2e}",
                      drop + (" *" if r.at_floor else ""))
    console.print(banks)
    note = floor_note(rows, scale)
    if note:
        console.print(note, highlight=False)
    if any(r.at_floor and r.drop_diff is None for r in rows):
        console.print("(- : this parity.json predates the absolute figure; `foclip export` again to get it)",
                      highlight=False)


def _verify(args: argparse.Namespace) -> int:
    """Self-check each graph (or engine, for trt) on this machine; print a table; 1 when one fails."""
    from rich.table import Table

    from foclip.cli.common import console, err_console
    from foclip.runtime.backends import canonical_backend, create_runner, require_backend
    from foclip.runtime.bundle import open_bundle
    from foclip.runtime.capabilities import caps, verify_targets
    from foclip.runtime.selfcheck import self_check

    bundle = open_bundle(args.bundle)
    backend = require_backend(args.backend)
    targets = [(k, p) for k, p in verify_targets(backend, bundle.manifest) if args.precision in (None, p)]
    if not targets:
        err_console.print(f"[bold red]error:[/] {args.bundle} | has nothing to verify on {backend}"
                          f"{' at ' + args.precision if args.precision else ''}. Expected a graph"
                          f"{' or engine (foclip build-engine)' if caps(backend).needs_engine else ''}.", highlight=False)
        return 1
    table = Table(title=f"self-check on this machine ({canonical_backend(backend)}; reference: fp32 PyTorch)")
    for col in ("graph", "precision", "min cosine", "gate", "result", "rows", "seconds"):
        table.add_column(col, justify="left" if col in ("graph", "result") else "right",
                         no_wrap=col in ("graph", "result"))
    failed = 0
    for key, prec in targets:
        with create_runner(backend, bundle, key, engine_precision=prec) as runner:
            r = self_check(bundle, bundle.graph(key), runner)
        failed += not r.passed
        table.add_row(key, prec, f"{r.min_cosine:.6f}", f">= {r.gate}",
                      "[green]pass[/]" if r.passed else "[bold red]FAIL[/]", str(r.rows), f"{r.seconds:.2f}")
    console.print(table)
    if failed:
        err_console.print(f"[bold red]error:[/] {args.bundle} | {failed} of {len(targets)} graphs miss their gate on "
                          "this machine. Expected every graph within its gate (re-export int8 with "
                          "--int8-method dynamic-u8s7, or serve another precision).", highlight=False)
        return 1
    return 0
