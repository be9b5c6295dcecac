"""One call that reproduces a reference checkpoint: data -> open_clip_train -> safetensors -> card.

Each step resumes: rendered images are kept, the trainer resumes from its latest epoch
checkpoint, and the final files are written atomically.
"""

from __future__ import annotations

# Lazy imports: torch, open_clip and matplotlib are imported inside the steps that train, evaluate or plot.
import dataclasses
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from foclip_train.reference.data import BuildConfig, build_dataset
from foclip_train.reference.evaluate import evaluate_heldout
from foclip_train.reference.train import Recipe, recipe_for, run_trainer, to_safetensors, training_curve


@dataclasses.dataclass(frozen=True)
class ReferenceBuild:
    """Where a build reads and writes.

    Attributes:
        model: ``foclip-ref-vit`` or ``foclip-ref-rn``.
        work: scratch folder (``data/`` and the trainer's ``logs/``).
        out: where the checkpoint, its card JSON and the curve PNG are written.
        epochs: override of the recipe's epochs (None: the shipped recipe).
        seed: trainer seed and data-split salt.
        data: knobs of the data build (its ``seed`` is replaced by ``seed``).
    """

    model: str
    work: Path
    out: Path
    epochs: int | None = None
    seed: int = 0
    data: BuildConfig = dataclasses.field(default_factory=BuildConfig)


def _recipe(b: ReferenceBuild) -> Recipe:
    r = recipe_for(b.model)
    return dataclasses.replace(r, epochs=b.epochs or r.epochs, seed=b.seed)


def run_build(b: ReferenceBuild, on_data: Callable[[int, int], None] | None = None,
              on_step: Callable[[str], None] | None = None) -> dict:
    """Build the data (if needed), train, convert, evaluate and write the card.

    Args:
        b: the build description.
        on_data: progress callback of the data build ``(done, total)``.
        on_step: called with a step title as each step starts.

    Returns:
        The model card dict (also written as ``<out>/<model>.json``).

    Raises:
        FoclipError: missing Debian packages, failing trainer, unreadable outputs.
    """
    say = on_step or (lambda _s: None)
    recipe = _recipe(b)
    data_dir = b.work / "data"
    t0 = time.perf_counter()
    say("data")
    build_dataset(data_dir, dataclasses.replace(b.data, seed=b.seed), on_data)
    t_data = time.perf_counter() - t0
    say("train (open_clip_train)")
    name = f"{b.model}-s{b.seed}-e{recipe.epochs}" + (f"-c{recipe.crop_scale[0]:g}" if recipe.crop_scale else "")
    ckpt = run_trainer(recipe, data_dir, b.work / "logs", name)
    t_train = time.perf_counter() - t0 - t_data
    say("convert + evaluate")
    return finish(b.model, recipe, ckpt, data_dir, b.out,
                  {"data": round(t_data, 1), "train_this_call": round(t_train, 1)})


def finish(model: str, recipe: Recipe, ckpt: Path, data_dir: Path, out: Path, wall: dict) -> dict:
    """Convert a finished trainer run to fp16 safetensors, evaluate it and write its card and curve.

    Args:
        model: the reference model name.
        recipe: the recipe it was trained with.
        ckpt: the trainer's last ``epoch_N.pt`` (its run folder is two levels up).
        data_dir: the data folder it was trained on.
        out: where ``<model>.safetensors``, ``<model>.json`` and ``<model>-curve.png`` go.
        wall: wall times measured by the caller (seconds).

    Returns:
        The card dict.
    """
    run_dir = ckpt.parent.parent
    report = json.loads((data_dir / "data_card.json").read_text())
    weights = out / f"{model}.safetensors"
    sha = to_safetensors(ckpt, weights)
    metrics = evaluate_file(model, weights, data_dir / "heldout.csv")
    curve = training_curve(run_dir)
    card = {
        "model": model,
        "weights": weights.name,
        "sha256": sha,
        "bytes": weights.stat().st_size,
        "dtype": "float16",
        "recipe": dataclasses.asdict(recipe),
        "trainer": "open_clip_train.main (open_clip_torch[training]), --device cpu --precision fp32",
        "steps": recipe.epochs * (report["splits"]["train"] // recipe.batch_size),
        "data": {"train_pairs": report["splits"]["train"], "heldout_pairs": report["splits"]["heldout"],
                 "skipped": report["skipped"]},
        "wall_s": {**wall, "train_log": _trainer_wall(run_dir / "out.log")},
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
        "heldout": metrics,
        "curve": curve,
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{model}.json.tmp"
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, out / f"{model}.json")
    try:
        plot_curve(curve, out / f"{model}-curve.png", model)
    except ImportError:
        pass  # matplotlib (extra `plots`) is optional; the numbers are in the JSON
    return card


def evaluate_file(model: str, weights: Path, heldout_csv: Path) -> dict:
    """Held-out metrics of a checkpoint file loaded through foclip's loader."""
    from foclip.models.loader import load_clip

    return evaluate_heldout(load_clip(model, str(weights)), heldout_csv).to_dict()


def _trainer_wall(log: Path) -> float | None:
    # First and last timestamp of open_clip_train's log: training time across resumed calls.

    stamps = []
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else []:
        try:
            stamps.append(dt.datetime.strptime(line[:19], "%Y-%m-%d,%H:%M:%S"))
        except ValueError:
            continue
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None


def plot_curve(curve: dict, dst: Path, title: str) -> None:
    """Train loss per step and held-out loss / R@1 per epoch, as one PNG.

    Raises:
        ImportError: matplotlib is missing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    if curve["train"]:
        x, y = zip(*curve["train"])
        a.plot(x, y, lw=1, label="train (batch)")
    val = curve["val"]
    if val:
        ep = [v["epoch"] for v in val]
        a.plot(ep, [v["clip_val_loss"] for v in val], "o-", label="held-out")
        b.plot(ep, [v["image_to_text_R@1"] * 100 for v in val], "o-", label="image->text R@1")
        b.plot(ep, [v["image_to_text_R@5"] * 100 for v in val], "o-", label="image->text R@5")
    a.set(xlabel="epoch", ylabel="contrastive loss", title=title)
    b.set(xlabel="epoch", ylabel="% (held-out, open_clip's per-pair rule)")
    a.legend()
    b.legend()
    fig.tight_layout()
    tmp = dst.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, dst)
