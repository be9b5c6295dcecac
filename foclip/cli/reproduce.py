"""`foclip reproduce [IMAGES...] --out DIR`: the FoCLIP paper's tables for one model (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from foclip.cli.common import (
    PRETRAINED_HELP,
    check_weights_source,
    claims_output,
    console,
    err_console,
    require_paths,
    require_torch_side,
    resolve_pretrained,
)
from foclip.cli.progress import Estimator, make_progress
from foclip.errors import InputError
from foclip.outputs import ensure_writable
from foclip.prompts import builtin_help

SETS = "masterpieces,artistic,imagenet-25,imagenet-50,imagenet-100"
# Kept in step with foclip_train.reproduce (not imported here: the CLI's --help stays torch-free and fast).
SECTION_NAMES = ("table1", "table2", "table3", "adaptive", "transfer", "spectral", "wild", "in_domain")
# wild and in_domain are opt-in: wild attacks every image a second time (the other --output) and scores a
# clean corpus; in_domain attacks the held-out clip art with two reference models and two attack arms.
DEFAULT_SECTIONS = SECTION_NAMES[:-2]
TRANSFER = "foclip-ref-vit:reference,foclip-ref-rn:reference"
QUICK_EXTRA = 4


def add_parser(sub: Any) -> None:
    """Register ``foclip reproduce``."""
    p = sub.add_parser(
        "reproduce", help="run the FoCLIP paper's experiments and write REPORT.md with Tables 1-3 (resumable)",
        description="Attacks the images with every prompt set (Table 1: CLIPscore before/after), measures the "
                    "grayscale drop (Table 2) and the drop detector with held-out thresholds (Table 3), each "
                    "beside the paper's figure; then the paper's open questions: adaptive attacks against the "
                    "grayscale rule and a multi-probe detector, transfer across models, and the perturbation's "
                    "spectrum (luma/chroma, frequency bands); and the detectors in the wild: false positives on "
                    "clean traffic (--clean) and attacks after JPEG/resizing/noise. Writes DIR/REPORT.md, DIR/report.json and "
                    "DIR/figures/*.png. Reruns skip finished work.")
    p.add_argument("images", nargs="*", metavar="IMAGES_OR_DIRS",
                   help="image files and/or folders (default: the sample photos shipped with scikit-image, "
                        "scikit-learn and matplotlib)")
    p.add_argument("--images", dest="images_opt", action="append", default=[], metavar="in-domain|DIR",
                   help="`in-domain`: the held-out clip art and emoji that ship with foclip (200 scored images; "
                        "the in_domain section's matched arm is calibrated on the separate calibration images "
                        "beside them), or a folder, e.g. DIR/scored of `foclip data heldout --out DIR` (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (created; reruns resume)")
    p.add_argument("--model", default="foclip-ref-vit", help="open_clip model name (default: %(default)s)")
    p.add_argument("--pretrained", default=None, help=PRETRAINED_HELP)
    p.add_argument("--prompt-sets", default=SETS,
                   help=f"comma-separated prompt sets: built-in ({builtin_help()}) or text files "
                        "(default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="200 steps instead of the paper's 1000 (measured: 17 min on a shared 2-core CPU with the "
                        "reference ViT and --prompt-sets clipart,clipart-heldout; each further set adds about "
                        "4 min; docs/science.md)")
    p.add_argument("--iters", type=int, default=None, help="SGD steps per image (overrides --quick)")
    p.add_argument("--space", choices=("model", "native"), default="model",
                   help="optimisation space: model (the paper's S x S view) or native (default: %(default)s)")
    p.add_argument("--output", choices=("model", "input"), default="model",
                   help="saved size: model (S x S, what was optimised) or input (default: %(default)s)")
    p.add_argument("--max-images", type=int, default=8, help="sample photos to use (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="images optimised together (default: %(default)s)")
    p.add_argument("--target-fpr", type=float, default=0.05, help="FPR target of Table 3 (default: %(default)s)")
    p.add_argument("--folds", type=int, default=5, help="k of the held-out evaluation (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random-init, fold and bootstrap seed (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures (no matplotlib needed)")
    p.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                   help="comma-separated report sections to compute (default: %(default)s; add `wild` for false "
                        "positives on clean traffic and attacks after JPEG/resize); Tables 1-3 attack every "
                        "prompt set, the others only the first")
    p.add_argument("--extra-images", type=int, default=None,
                   help="images of the first prompt set used by the adaptive and transfer sections "
                        f"(default: --max-images, {QUICK_EXTRA} with --quick)")
    p.add_argument("--adaptive-weight", type=float, default=1.0,
                   help="gamma of the adaptive attacks in the adaptive section (default: %(default)s)")
    p.add_argument("--multi-probes", type=int, default=3,
                   help="probes of the multi-probe detector, chosen by their single-probe AUC (default: %(default)s)")
    p.add_argument("--transfer-models", default=TRANSFER,
                   help="comma-separated model:pretrained pairs of the transfer section; a model that cannot "
                        "be loaded is skipped with a note (default: %(default)s)")
    p.add_argument("--clean", action="append", default=[], metavar="DIR",
                   help="folder of clean images for the wild section (each subfolder a group; repeatable; "
                        "default: the corpus of `foclip data wild`, built into OUT/wild/corpus)")
    p.add_argument("--budget-s", type=float, default=None, metavar="SECONDS",
                   help="the in_domain section starts no attack batch after this many seconds; cells not "
                        "finished are reported with the n they have and resume on the next run (default: none)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> Any:
    """A :class:`foclip_train.reproduce.ReproduceConfig` from parsed arguments.

    Raises:
        InputError: an option value is out of range.
    """
    from foclip_train.config import AttackConfig
    from foclip_train.reproduce import FULL_ITERS, QUICK_EXTRA_IMAGES, QUICK_ITERS, ReproduceConfig

    iters = args.iters if args.iters is not None else (QUICK_ITERS if args.quick else FULL_ITERS)
    attack = AttackConfig(iters=iters, space=args.space, output=args.output)
    sets = tuple(s.strip() for s in args.prompt_sets.split(",") if s.strip())
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    pairs = []
    for item in (s.strip() for s in args.transfer_models.split(",") if s.strip()):
        model, sep, pretrained = item.partition(":")
        if not sep or not model or not pretrained:
            raise InputError(f"--transfer-models item {item!r}", "is not model:pretrained",
                             "e.g. foclip-ref-vit:reference,foclip-ref-rn:reference")
        pairs.append((model, pretrained))
    extra = args.extra_images if args.extra_images is not None else (
        min(QUICK_EXTRA_IMAGES, args.max_images) if args.quick else args.max_images)
    images = tuple(args.images) + tuple(args.images_opt)
    return ReproduceConfig(model=args.model, pretrained=resolve_pretrained(args.model, args.pretrained), images=images,
                           max_images=args.max_images, prompt_sets=sets, attack=attack, batch=args.batch,
                           seed=args.seed, device=args.device, target_fpr=args.target_fpr, folds=args.folds,
                           sections=sections, extra_images=extra, adaptive_weight=args.adaptive_weight,
                           multi_probes=args.multi_probes, transfer_models=tuple(pairs),
                           clean=tuple(args.clean), budget_s=args.budget_s)


class RichProgress:
    """:class:`foclip_train.reproduce.ProgressSink` drawn with rich bars."""

    def __init__(self, progress: Any, console: Any) -> None:
        self.progress, self.console, self.tasks = progress, console, {}
        self.done: dict[str, tuple[str, float, float]] = {}  # key -> (description, done, total)
        self.estimator = Estimator()

    def start(self, key: str, description: str, total: int) -> None:
        """Add a bar."""
        self.tasks[key] = self.progress.add_task(description, total=total, info="")
        self.done[key] = (description, 0.0, float(total))
        self.estimator.start(key)

    def advance(self, key: str, n: int = 1, info: str = "") -> None:
        """Move a bar (and its note); once its first steps are timed, a long task prints one estimate."""
        kw = {"info": info} if info else {}
        self.progress.update(self.tasks[key], advance=n, **kw)
        what, done, total = self.done[key]
        self.done[key] = (what, done + n, total)
        line = self.estimator.line(key, what, done + n, total, "Ctrl-C stops; a rerun resumes.")
        if line:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)

    def message(self, text: str) -> None:
        """Print a note above the bars."""

        self.console.print(f"[bold yellow]note:[/] {escape(text)}", highlight=False)


def _holds_results(out: Path) -> bool:
    """A report folder with results of an earlier step (the settings and sample photos written first are not)."""
    return any(p.is_file() for p in out.rglob("*") if p.relative_to(out).parts[0] not in ("inputs", "config.json"))


@claims_output("foclip reproduce", holds_work=_holds_results)
def run(args: argparse.Namespace) -> int:
    """Run ``foclip reproduce``; prints where the report is and the three tables."""

    require_torch_side("foclip reproduce")

    from foclip_train.reproduce import run_reproduce

    cfg = config_from_args(args)

    require_paths(args.images + [i for i in args.images_opt if i != "in-domain"], "input",
                  "an image file or a folder of images (or `--images in-domain`)")
    check_weights_source(cfg.model, cfg.pretrained)  # offline and not cached: one line before anything is written
    ensure_writable(args.out, folder=True)  # a file as --out, or an unwritable place: one line, before any work
    console.print(f"foclip reproduce: {cfg.model} ({cfg.pretrained}), {len(cfg.prompt_sets)} prompt sets, "
                  f"{cfg.attack.iters} steps, {cfg.attack.space} space -> {args.out}", highlight=False)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with make_progress(*columns, console=err_console) as progress:
        report = run_reproduce(cfg, args.out, RichProgress(progress, err_console), figures=not args.no_figures)
    secs = report["sections"]
    if all(k in secs for k in ("table1", "table2", "table3")):
        t1 = {r["prompt_set"]: r for r in secs["table1"]["rows"]}
        t2 = {r["prompt_set"]: r for r in secs["table2"]["rows"]}
        t3 = {r["prompt_set"]: r for r in secs["table3"]["rows"]}
        _print_summary(console, t1, t2, t3, report)
    for name in ("adaptive", "transfer", "spectral", "wild", "in_domain"):
        if name in secs:
            console.print(f"section {name}: see REPORT.md", highlight=False)
    out = Path(args.out)
    console.print(f"wrote {out / 'REPORT.md'} and {out / 'report.json'}", highlight=False)
    return 0


def _print_summary(console: Any, t1: dict, t2: dict, t3: dict, report: dict) -> None:
    title = f"foclip reproduce: {report['model']} ({report['pretrained']})"
    if report["random_init"]:
        title += " RANDOM weights: mechanics only"
    t = Table(title=title)
    for col in ("prompt set", "impr. of means", "paper", "drop orig / manip", "held-out acc.", "paper acc."):
        t.add_column(col, justify="right" if col != "prompt set" else "left", no_wrap=col == "prompt set")
    for name in list(t1) + ["all sets"]:
        a, b, c = t1.get(name), t2.get(name), t3.get(name)
        impr = "" if a is None or a["improvement_of_means_pct"] is None else f"{a['improvement_of_means_pct']:+.1f} %"
        paper = "" if a is None or a["paper_improvement_pct"] is None else f"{a['paper_improvement_pct']:+.1f} %"
        drops = "" if b is None or b["mean_drop_orig"] is None else f"{b['mean_drop_orig']:.1%} / {b['mean_drop_adv']:.1%}"
        h = (c or {}).get("held_out", {})
        acc = f"{h['accuracy']:.1%}" if "accuracy" in h else "-"
        t.add_row(name, impr, paper, drops, acc, f"{report['paper']['detection_accuracy']:.0%}")
    console.print(t)
