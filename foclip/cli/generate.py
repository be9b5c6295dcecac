"""`foclip generate`: write a FoCLIP adversarial test set (resumable; see docs/generate.md)."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from rich.markup import escape

from foclip.cli.common import PRETRAINED_HELP, STRICT_HELP, claims_output
from foclip.errors import FoclipError
from foclip.prompts import builtin_help


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
    p.add_argument("--pretrained", default=None, help=PRETRAINED_HELP)
    p.add_argument("--prompts", default="artistic",
                   help=f"a built-in prompt set ({builtin_help()}) or a text file, one prompt a line "
                        "(default: %(default)s)")
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
    p.add_argument("--adaptive", default="none", metavar="PROBES",
                   help="an attacker who knows the detector: also keep these probe copies aligned, e.g. gray "
                        "(the grayscale rule) or gray,hue180,swap-rb (the multi-probe detector); default none")
    p.add_argument("--adaptive-weight", type=float, default=d.adaptive_weight,
                   help="gamma, weight of the adaptive term (default: %(default)s)")
    p.add_argument("--space", choices=("native", "model"), default=d.space,
                   help="where the pixels are optimised: native (input resolution, lr rescaled so a step moves "
                        "the model view as in model space) or model (the resized+cropped S x S view, the "
                        "paper's setting) (default: %(default)s)")
    p.add_argument("--output", choices=("input", "model"), default=d.output,
                   help="saved size: input (the input's size; in model space the perturbation is lifted "
                        "back onto the input) or model (S x S, needs --space model) (default: %(default)s)")
    p.add_argument("--batch", type=int, default=4, help="images optimised together (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random-init and prompt-draw seed (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--fresh", action="store_true",
                   help="discard what an earlier run wrote in --out (manifest, images, summary) and start over; "
                        "needed when the settings differ from that run's (a rerun with the same settings resumes)")
    p.add_argument("--strict", action="store_true", help=STRICT_HELP)
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
                          amp=args.amp, space=args.space, output=args.output,
                          adaptive=tuple(a.strip() for a in args.adaptive.split(",") if a.strip() and a.strip() != "none"),
                          adaptive_weight=args.adaptive_weight)
    from foclip.cli.common import resolve_pretrained

    return GenerateConfig(model=args.model, pretrained=resolve_pretrained(args.model, args.pretrained), prompts=args.prompts, attack=attack,
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


def _holds_records(out: Path) -> bool:
    """An output folder with at least one image record (work a rerun resumes from)."""
    from foclip_train.generate import latest_records

    return bool(latest_records(out))


def report_skipped_inputs(args: argparse.Namespace) -> None:
    """Say which files of the input folders are not images (or refuse them with ``--strict``).

    Files under ``--out`` are never inputs (an output folder inside an input folder), so they are not named.

    Raises:
        InputError: ``--strict`` and a file was skipped.
    """
    from foclip.cli.common import report_skipped
    from foclip.runtime.inputs import Skipped, expand_inputs

    skipped = Skipped()
    for _ in expand_inputs(args.inputs, skipped):
        pass
    out = Path(args.out).expanduser().resolve()
    skipped.items = [(p, why) for p, why in skipped.items if out not in Path(p).resolve().parents]
    report_skipped(skipped, args.strict, f"inputs {' '.join(args.inputs)!r}")


@claims_output("foclip generate", holds_work=_holds_records)
def run(args: argparse.Namespace) -> int:
    """Run ``foclip generate``; returns 1 when any image failed (listed), else 0.

    Everything that can be checked without the model (options, input paths, the work left, the
    weights source) is checked before the model loads.
    """
    from foclip.cli.common import require_torch_side

    require_torch_side("foclip generate")
    from foclip.cli.common import check_weights_source, require_paths
    from foclip.outputs import ensure_writable

    cfg = config_from_args(args)
    if args.ray:
        try:
            distributed = importlib.import_module("foclip_train.distributed")
        except ModuleNotFoundError as exc:
            if exc.name != "foclip_train.distributed":
                raise
            raise FoclipError("--ray", "is not available in this build (foclip_train.distributed is missing)",
                              "a run without --ray") from None
    for flag, value in (("--address", args.address), ("--workers", args.workers)):
        if value is not None and not args.ray:
            raise FoclipError(flag, "only applies with --ray", f"--ray {flag} ...")
    require_paths(args.inputs, "input", "an image file or a folder of images")
    report_skipped_inputs(args)
    ensure_writable(args.out, folder=True)  # before loading a model or optimising anything
    from foclip_train.generate import check_rerun, clear_outputs

    if args.fresh:
        removed = clear_outputs(args.out)
        if removed:
            from foclip.cli.common import err_console

            err_console.print(f"--fresh: removed {removed} file(s) of the earlier run in {args.out}", highlight=False)
    else:
        check_rerun(args.out, cfg)  # other settings than the folder's images: refuse, never mix or skip
    if args.ray:
        return _run_ray(args, distributed)
    from foclip.cli.common import console, random_weights_notice
    from foclip_train.generate import load_resources, plan_jobs

    jobs = plan_jobs(args.inputs, args.out, cfg)
    done = require_work(jobs, args.out, args.inputs)
    if not jobs:  # a finished run: no model to load
        from foclip_train.generate import write_summary

        console.print(f"nothing to do: all {done} image(s) are already done in {args.out}", highlight=False)
        summary = write_summary(args.out)
        print_summary(summary, args.out)
        return 1 if summary["failures"] else 0
    check_weights_source(cfg.model, cfg.pretrained)
    console.print(f"loading {cfg.model} ({cfg.pretrained}) and prompt set {cfg.prompts!r}...", highlight=False)
    loaded, bank = load_resources(cfg)
    random_weights_notice(loaded.pretrained)
    console.print(f"{len(jobs)} image(s) to do, batch {cfg.batch}, {cfg.attack.iters} steps each "
                  f"({done} already done in {args.out})", highlight=False)
    summary = run_with_progress(jobs, args.out, cfg, loaded, bank)
    print_summary(summary, args.out)
    return 1 if summary["failures"] else 0


def _duration(seconds: float) -> str:
    """``42 s``, ``7.5 min``, ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def eta_line(seconds_per_step: float, batch_n: int, image_steps_left: int, iters: int, n_images: int,
             device: str) -> str:
    """The estimate printed once the first steps are measured.

    Args:
        seconds_per_step: measured wall time of one optimisation step of the batch in flight.
        batch_n: images in that batch.
        image_steps_left: image-steps still to run (the batch in flight included).
        iters: steps per image.
        n_images: images in the run.
        device: where it runs.

    Returns:
        One line: the measured rate, the total, the finish time, and what a tenth of the steps would take.
    """
    import datetime

    per_image_step = seconds_per_step / max(batch_n, 1)
    left = per_image_step * image_steps_left
    finish = (datetime.datetime.now() + datetime.timedelta(seconds=left)).strftime("%H:%M")
    line = (f"estimate: {n_images} image(s) x {iters} steps at {seconds_per_step:.2f} s a step "
            f"(batch of {batch_n}, {device}) -> about {_duration(left)} left, done near {finish}. "
            "Ctrl-C stops; a rerun resumes.")
    if iters >= 100:
        line += f" --iters {iters // 10} would take about {_duration(left / 10)}."
    return line


def run_with_progress(jobs, out_dir: str, cfg, loaded, bank) -> dict:
    """Run :func:`foclip_train.generate.run_generate` on planned ``jobs`` under a rich progress bar.

    Once the first steps of the first batch are timed, a run projected to last over 30 s prints one
    estimate line (steps x images x measured step time).

    Returns:
        The summary dict.
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from foclip.cli.common import console
    from foclip.cli.progress import make_progress
    from foclip_train.generate import run_generate

    w = cfg.attack.score_scale
    done_scores: list[float] = []
    # n: images of the batch in flight (from its step-0 check); t0: time of that check.
    state: dict = {"live": None, "n": 0, "t0": None, "estimated": False, "left": len(jobs) * cfg.attack.iters}
    device = str(next(loaded.model.parameters()).device)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with make_progress(*columns, console=console, transient=False) as progress:
        steps = progress.add_task("image-steps", total=max(len(jobs) * cfg.attack.iters, 1), info="")
        images = progress.add_task("images", total=len(jobs), info="")

        def info() -> str:
            # Only numbers that exist: nothing before the first check, no mean of zero images.
            parts = []
            if state["live"] is not None:
                parts.append(f"score now {state['live']:.2f}")
            if done_scores:
                parts.append(f"done {sum(done_scores) / len(done_scores):.2f}")
            return (" ".join(parts) + f" (0..{w:g})") if parts else ""

        def estimate(step: int) -> None:
            per_step = (time.perf_counter() - state["t0"]) / step
            left = state["left"] - step * state["n"]
            if not state["estimated"] and per_step / max(state["n"], 1) * left > 30:
                progress.console.print(eta_line(per_step, state["n"], left, cfg.attack.iters, len(jobs), device),
                                       highlight=False)
            state["estimated"] = True

        def on_step(step: int, scores: list[float] | None) -> None:
            if scores is not None:  # a best-iterate check, not a step
                state["live"] = sum(scores) / len(scores)
                if step == 0:
                    state["n"], state["t0"] = len(scores), time.perf_counter()
                elif not state["estimated"]:
                    estimate(step)
                progress.update(steps, info=info())
            elif step > 0:
                progress.update(steps, advance=state["n"], info=info())

        def on_batch(records: list[dict]) -> None:
            for r in records:
                if r["error"]:
                    progress.console.print(f"[red]failed:[/] {escape(r['error'])}", highlight=False)
                else:
                    done_scores.append(r["score_adv"])
            failed = sum(1 for r in records if r["error"])
            state["left"] -= cfg.attack.iters * len(records)
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
    t = Table(title=f"foclip generate (scores 0..{w:g}, per-pair clamp)")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("output folder", str(out_dir))
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
        console.print(f"[red]FAILED[/] {escape(item['source'])}: {escape(item['error'])}", highlight=False)


def _run_ray(args: argparse.Namespace, distributed: Any) -> int:
    """`foclip generate --ray [--address ...]`.

    Starts a local Ray instance unless ``--address`` names a cluster, runs
    :func:`foclip_train.distributed.generate_distributed` with a progress bar, and prints the same
    summary as one process.

    Returns:
        1 when any image failed (listed), else 0.

    Raises:
        InputError: an option value is out of range.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from foclip.cli.common import console, random_weights_notice
    from foclip.cli.progress import make_progress
    from foclip.errors import InputError, require
    from foclip.raylogs import quiet_ray_start_notes
    from foclip_train.generate import plan_jobs

    ray = require("ray", "serve")
    cfg = config_from_args(args)
    workers = args.workers
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}", "is out of range", "an integer >= 1")
    random_weights_notice(cfg.pretrained)
    quiet_ray_start_notes()  # two start-up notes that read like problems (foclip/raylogs.py)
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        jobs = plan_jobs(args.inputs, args.out, cfg)
        require_work(jobs, args.out, args.inputs)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        scores: list[float] = []
        with make_progress(*columns, console=console) as progress:
            task = progress.add_task("images (ray)", total=len(jobs), info="")

            def on_batch(records: list[dict[str, Any]]) -> None:
                scores.extend(r["score_adv"] for r in records if not r.get("error") and r.get("score_adv") is not None)
                mean = sum(scores) / len(scores) if scores else float("nan")
                progress.update(task, advance=len(records), info=f"mean score_adv {mean:.2f}")
                for r in records:
                    if r.get("error"):
                        console.print(f"[red]failed:[/] {escape(r['error'])}", highlight=False)

            summary, stats = distributed.generate_distributed(args.inputs, args.out, cfg, workers=workers, on_batch=on_batch,
                                                  jobs=jobs)
        console.print(f"ray: {stats.workers} worker(s), {stats.batches} batch(es), "
                      f"{stats.retried_batches} resent after a worker died, {stats.wall_s:.1f} s", highlight=False)
        print_summary(summary, args.out)
        return 1 if summary["failures"] else 0
    finally:
        ray.shutdown()
