"""`foclip reference build`: reproduce a shipped reference CLIP from the Debian packages, offline.

data (openclipart-png + fonts-noto-color-emoji) -> open_clip_train on the CPU -> fp16 safetensors
-> held-out zero-shot and recall -> card JSON + training-curve PNG. Reruns resume every step.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
from rich.table import Table

from foclip.cli.common import claims_output, console, require_torch_side
from foclip.cli.progress import make_progress
from foclip.errors import InputError
from foclip.outputs import ensure_writable, holds_files

MODELS = ("foclip-ref-vit", "foclip-ref-rn")


def add_parser(sub) -> None:
    p = sub.add_parser("reference", help="reference CLIPs trained by foclip on openly licensed data",
                       description="foclip's own small CLIPs (foclip-ref-vit, foclip-ref-rn), shipped in the package "
                                   "and loaded offline with --pretrained reference; `build` retrains one, `select` "
                                   "compares training recipes. docs/reference.md has the data and model cards.")
    rsub = p.add_subparsers(dest="reference_command", required=True, metavar="ACTION")
    b = rsub.add_parser(
        "build", help="rebuild a reference checkpoint from scratch (data, training, card)",
        description="Rebuild a reference CLIP offline: render ~8,000 clip-art and emoji images from the Debian "
                    "packages openclipart-png and fonts-noto-color-emoji (sudo apt-get install openclipart-png "
                    "fonts-noto-color-emoji), train it with open_clip's trainer on the CPU (pip install "
                    "'foclip[train]'), then measure it on a held-out split and write the checkpoint, its card "
                    "(JSON) and training curve (PNG) to --out. The shipped ones took ~34 min each on a shared "
                    "2-core CPU; a rerun resumes every step. --install copies the result over the shipped checkpoint.")
    b.add_argument("--model", default="foclip-ref-vit", choices=(*MODELS, "all"),
                   help="which reference model (default: %(default)s)")
    b.add_argument("--work", default=Path("reference_work"), type=Path,
                   help="scratch folder: rendered data and trainer logs (default: %(default)s)")
    b.add_argument("--out", default=Path("reference_out"), type=Path,
                   help="where the checkpoint, card JSON and curve PNG go (default: %(default)s)")
    b.add_argument("--epochs", type=int, default=None, help="override the shipped recipe's epochs")
    b.add_argument("--seed", type=int, default=0, help="trainer seed and split salt (default: %(default)s)")
    b.add_argument("--install", action="store_true",
                   help="also copy the checkpoint and card into the package (what --pretrained reference loads)")
    b.set_defaults(func=run)
    s = rsub.add_parser("select", help="compare candidate recipes on a validation split carved from the training split",
                        description="Train each candidate recipe (foclip_train/reference/select.py) on the training "
                                    "split less a validation part, and print their validation figures side by side.")
    s.add_argument("--model", default="foclip-ref-rn", choices=MODELS, help="which reference model (default: %(default)s)")
    s.add_argument("--work", default=Path("reference_work"), type=Path,
                   help="scratch folder: data/ (built if missing) and select/ (default: %(default)s)")
    s.add_argument("--candidates", default=None,
                   help="comma-separated candidate names (default: all; see foclip_train/reference/select.py)")
    s.set_defaults(func=run_select)


@claims_output("foclip reference build", "work", "out", holds_work=holds_files)
def run(args: argparse.Namespace) -> int:
    require_torch_side("foclip reference build")

    from foclip.models.loader import REFERENCE_DIR
    from foclip_train.reference.build import ReferenceBuild, run_build

    if args.epochs is not None and args.epochs < 1:
        raise InputError(f"--epochs {args.epochs}", "is out of range", "an integer >= 1")

    for folder in (args.work, args.out):  # before the data is rendered (minutes)
        ensure_writable(folder, folder=True)
    for model in MODELS if args.model == "all" else (args.model,):
        console.rule(f"[bold]{model}[/]")
        with make_progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task("rendering images", total=None)

            def on_data(done: int, total: int, task=task) -> None:
                bar.update(task, completed=done, total=total)

            card = run_build(ReferenceBuild(model, args.work, args.out, args.epochs, args.seed), on_data,
                             lambda s: console.print(f"step: {s}", highlight=False))
        h = card["heldout"]
        console.print(
            f"{model}: zero-shot top-1 {h['zero_shot_top1']:.1f} % over {h['n_categories']} categories "
            f"(chance {h['zero_shot_chance']:.1f} %, majority {h['zero_shot_majority']:.1f} %; balanced "
            f"{h['zero_shot_balanced']:.1f} %; caption ensemble {_pct(h.get('ensemble_top1'))} / balanced "
            f"{_pct(h.get('ensemble_balanced'))}), image->text R@1 {h['i2t_r1']:.1f} % / R@5 "
            f"{h['i2t_r5']:.1f} % (held-out, {h['n_images']} images); train wall "
            f"{card['wall_s']['train_log']} s; sha256 {card['sha256'][:16]}...", highlight=False)
        if args.install:
            for name in (card["weights"], f"{model}.json"):
                shutil.copyfile(args.out / name, REFERENCE_DIR / name)
            console.print(f"installed into {REFERENCE_DIR}", highlight=False)
    return 0


@claims_output("foclip reference select", "work", holds_work=holds_files)
def run_select(args: argparse.Namespace) -> int:
    require_torch_side("foclip reference select")

    from foclip_train.reference.data import BuildConfig, build_dataset
    from foclip_train.reference.select import select_recipe

    ensure_writable(args.work, folder=True)
    data_dir = args.work / "data"
    build_dataset(data_dir, BuildConfig())
    names = [n.strip() for n in args.candidates.split(",") if n.strip()] if args.candidates else None
    rows = select_recipe(args.model, data_dir, args.work / "select" / args.model, names,
                         lambda s: console.print(f"train: {s}", highlight=False))
    t = Table(title=f"{args.model}: candidates on the validation split (fit {rows[0]['fit']}, val {rows[0]['val']})")
    for col in ("candidate", "ensemble top-1 %", "ensemble balanced %", "prompt top-1 %", "prompt balanced %",
                "chance %", "i2t R@1 %", "i2t R@5 %", "train s"):
        t.add_column(col, no_wrap=col == "candidate")
    for r in rows:
        m = r["val_metrics"]
        t.add_row(r["candidate"], _pct(m.get("ensemble_top1"), ""), _pct(m.get("ensemble_balanced"), ""),
                  f"{m['zero_shot_top1']:.1f}", _pct(m.get("zero_shot_balanced"), ""),
                  f"{m['zero_shot_chance']:.1f}", f"{m['i2t_r1']:.1f}", f"{m['i2t_r5']:.1f}",
                  f"{r['train_wall_s_this_call']:.0f}")
    console.print(t)
    return 0


def _pct(v: float | None, unit: str = " %") -> str:
    return "-" if v is None else f"{v:.1f}{unit}"
