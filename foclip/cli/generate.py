"""`foclip generate`: write a FoCLIP adversarial test set (resumable; see docs/generate.md)."""

from __future__ import annotations

import argparse
import importlib

from foclip.errors import FoclipError


def add_parser(sub) -> None:
    """Register ``foclip generate``."""
    p = sub.add_parser(
        "generate", help="optimise images into high-CLIPscore FoCLIP test images (resumable)",
        description="Optimise each image so that it scores high CLIPscore across a prompt set, and write "
                    "DIR/manipulated/<name>.png, DIR/original/<name>.<ext>, DIR/manifest.jsonl and "
                    "DIR/summary.json. Reruns skip images already done.",
    )
    d = _defaults()
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS", help="image files and/or folders (recursive)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reruns resume)")
    p.add_argument("--model", default="ViT-B-32", help="open_clip model name (default: %(default)s)")
    p.add_argument("--pretrained", default="random",
                   help="open_clip pretrained tag, checkpoint file (.safetensors/.pt/.bin) or `random` "
                        "(default: %(default)s)")
    p.add_argument("--prompts", default="artistic",
                   help="`artistic`, `imagenet-N` or a text file, one prompt a line (default: %(default)s)")
    p.add_argument("--iters", type=int, default=d.iters, help="SGD steps per image (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=d.alpha,
                   help="weight of the variance of the cosines over prompts (default: %(default)s)")
    p.add_argument("--beta", type=float, default=d.beta,
                   help="weight of the pixel guard (mean out-of-[0,1] excess) (default: %(default)s)")
    p.add_argument("--check-every", type=int, default=d.check_every,
                   help="steps between best-iterate checks on the 8-bit image (default: %(default)s)")
    p.add_argument("--score-scale", type=float, default=d.score_scale,
                   help="CLIPscore scale w: 100 (torchmetrics) or 2.5 (Hessel et al.) (default: %(default)s)")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default=d.amp,
                   help="autocast of the image encoder during optimisation (default: %(default)s)")
    p.add_argument("--batch", type=int, default=4, help="images optimised together (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random-init and prompt-draw seed (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--ray", action="store_true", help="distribute batches over a Ray cluster")
    p.add_argument("--address", default=None, help="Ray cluster address for --ray (default: start a local one)")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray workers for --ray (default: one per GPU, else one per 2 CPUs)")
    p.set_defaults(func=run)


def _defaults():
    from foclip_train.config import AttackConfig  # standard library only: `foclip --help` stays fast

    return AttackConfig()


def config_from_args(args: argparse.Namespace):
    """A :class:`foclip_train.generate.GenerateConfig` from parsed arguments.

    Raises:
        InputError: an option value is out of range.
    """
    from foclip_train.config import AttackConfig, GenerateConfig

    attack = AttackConfig(iters=args.iters, lr=args.lr, momentum=args.momentum, alpha=args.alpha,
                          beta=args.beta, check_every=args.check_every, score_scale=args.score_scale,
                          amp=args.amp)
    return GenerateConfig(model=args.model, pretrained=args.pretrained, prompts=args.prompts, attack=attack,
                          batch=args.batch, seed=args.seed, device=args.device)


def require_work(jobs: list, out_dir: str, inputs: list[str]) -> int:
    """Refuse inputs that hold no image at all (neither to do nor already done).

    Returns:
        The number of images already done in ``out_dir``.

    Raises:
        FoclipError: when there is nothing to do and nothing was done before.
    """
    from foclip_train.generate import latest_records

    done = sum(1 for r in latest_records(out_dir).values() if not r.get("error"))
    if not jobs and not done:
        raise FoclipError(f"inputs {' '.join(inputs)!r}", "hold no image files",
                          "image files or folders with .jpg/.jpeg/.png/.bmp/.webp/.tif/.tiff/.gif files")
    return done


def run(args: argparse.Namespace) -> int:
    """Run ``foclip generate``; returns 1 when any image failed (listed), else 0."""
    from foclip.outputs import ensure_writable

    ensure_writable(args.out, folder=True)  # before loading a model or optimising anything
    if args.ray:
        try:
            distributed = importlib.import_module("foclip_train.distributed")
        except ModuleNotFoundError as exc:
            if exc.name != "foclip_train.distributed":
                raise
            raise FoclipError("--ray", "is not available in this build (foclip_train.distributed is missing)",
                              "a run without --ray") from None
        return int(distributed.run_distributed(args) or 0)
    for flag, value in (("--address", args.address), ("--workers", args.workers)):
        if value is not None:
            raise FoclipError(flag, "only applies with --ray", f"--ray {flag} ...")
    from foclip.cli.common import console, random_weights_notice
    from foclip_train.generate import load_resources, plan_jobs

    cfg = config_from_args(args)
    console.print(f"loading {cfg.model} ({cfg.pretrained}) and prompt set {cfg.prompts!r}...", highlight=False)
    loaded, bank = load_resources(cfg)
    random_weights_notice(loaded.pretrained)
    jobs = plan_jobs(args.inputs, args.out, cfg)
    done = require_work(jobs, args.out, args.inputs)
    console.print(f"{len(jobs)} image(s) to do, batch {cfg.batch}, {cfg.attack.iters} iterations each "
                  f"({done} already done in {args.out})", highlight=False)
    summary = run_with_progress(jobs, args.out, cfg, loaded, bank)
    print_summary(summary, args.out)
    return 1 if summary["failures"] else 0


def run_with_progress(jobs, out_dir: str, cfg, loaded, bank) -> dict:
    """Run :func:`foclip_train.generate.run_generate` on planned ``jobs`` under a rich progress bar.

    Returns:
        The summary dict.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from foclip.cli.common import console
    from foclip_train.generate import run_generate

    w = cfg.attack.score_scale
    done_scores: list[float] = []
    state = {"live": float("nan"), "n": 0}  # n: images of the batch in flight (from its step-0 check)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        steps = progress.add_task("image-steps", total=max(len(jobs) * cfg.attack.iters, 1), info="")
        images = progress.add_task("images", total=len(jobs), info="")

        def info() -> str:
            done = sum(done_scores) / len(done_scores) if done_scores else float("nan")
            return f"score live {state['live']:.2f} done {done:.2f} /{w:g}"

        def on_step(step: int, scores: list[float] | None) -> None:
            if scores is not None:  # a best-iterate check, not a step
                state["live"] = sum(scores) / len(scores)
                state["n"] = len(scores)
                progress.update(steps, info=info())
            elif step > 0:
                progress.update(steps, advance=state["n"], info=info())

        def on_batch(records: list[dict]) -> None:
            for r in records:
                if r["error"]:
                    console.print(f"[red]failed:[/] {r['error']}", highlight=False)
                else:
                    done_scores.append(r["score_adv"])
            failed = sum(1 for r in records if r["error"])
            progress.update(steps, advance=cfg.attack.iters * failed, info=info())
            progress.update(images, advance=len(records))

        return run_generate([], out_dir, cfg, resources=(loaded, bank), on_step=on_step, on_batch=on_batch,
                            jobs=jobs)


def print_summary(summary: dict, out_dir: str) -> None:
    """Print the rich summary table and the list of failures."""
    from rich.table import Table

    from foclip.cli.common import console

    def f(v, fmt: str = "{:.3f}") -> str:
        return "-" if v is None else fmt.format(v)

    w = summary["score_scale"]
    t = Table(title=f"foclip generate -> {out_dir}  (scores on 0..{w}, per-pair clamp)")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("images done", str(summary["images"]))
    t.add_row("failures", str(summary["failures"]))
    t.add_row("mean score_orig", f(summary["mean_score_orig"]))
    t.add_row("mean score_adv", f(summary["mean_score_adv"]))
    t.add_row("mean improvement", f(summary["mean_improvement_pct"], "{:.1f} %"))
    t.add_row("median improvement", f(summary["median_improvement_pct"], "{:.1f} %"))
    if summary["improvement_undefined"]:
        t.add_row("improvement undefined (score_orig = 0)", str(summary["improvement_undefined"]))
    t.add_row("mean drop_orig (gray)", f(summary["mean_drop_orig"] and summary["mean_drop_orig"] * 100, "{:.1f} %"))
    t.add_row("mean drop_adv (gray)", f(summary["mean_drop_adv"] and summary["mean_drop_adv"] * 100, "{:.1f} %"))
    t.add_row("models", ", ".join(summary["models"]) or "-")
    console.print(t)
    for item in summary["failed"]:
        console.print(f"[red]FAILED[/] {item['source']}: {item['error']}", highlight=False)
