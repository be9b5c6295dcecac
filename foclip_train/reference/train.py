"""Train a reference CLIP with open_clip's own trainer (``open_clip_train.main``) on the CPU.

No contrastive loss or loop lives here: this module turns a :class:`Recipe` into the argv of
``open_clip_train.main.main`` after registering foclip's configs, and converts the trainer's
last checkpoint into the fp16 safetensors file that ships in ``foclip/models/reference/``.
Rerunning with the same ``logs``/``name`` resumes from the latest epoch checkpoint
(``--resume latest``); the seed is fixed.
"""

from __future__ import annotations

# Lazy imports: torch, open_clip and safetensors are imported inside the steps that train or save.
import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from foclip.errors import FoclipError, InputError, require


@dataclass(frozen=True)
class Recipe:
    """The training knobs of one reference model (passed to open_clip_train as flags).

    Attributes:
        model: registered open_clip config name.
        epochs: passes over the training CSV.
        batch_size: pairs per step (the contrastive batch).
        lr: peak learning rate (cosine schedule after ``warmup`` steps).
        warmup: warm-up steps.
        wd: weight decay.
        seed: open_clip_train's ``--seed``.
        crop_scale: RandomResizedCrop area range of the training transform (``--aug-cfg scale=...``);
            None keeps open_clip's default (0.9, 1.0). Colour jitter and grayscale augmentation stay
            off: the detector under study measures how much a model leans on colour.
    """

    model: str
    epochs: int
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 40
    wd: float = 0.1
    seed: int = 0
    crop_scale: tuple[float, float] | None = None


# Sized to train in ~5-30 min on 2 cores (ViT ~0.5 s a step when quiet, 5-9 s when 4 other jobs share them).
RECIPES: dict[str, Recipe] = {
    "foclip-ref-vit": Recipe("foclip-ref-vit", epochs=5),
    "foclip-ref-rn": Recipe("foclip-ref-rn", epochs=5),
}


def recipe_for(model: str) -> Recipe:
    """The shipped recipe of a reference model.

    Raises:
        InputError: the model has no reference recipe.
    """
    if model not in RECIPES:
        raise InputError(f"model {model!r}", "has no reference recipe", f"one of {', '.join(RECIPES)}")
    return RECIPES[model]


def trainer_argv(recipe: Recipe, data_dir: Path, logs: Path, name: str, workers: int = 1) -> list[str]:
    """open_clip_train flags for one run.

    Args:
        recipe: what to train and how.
        data_dir: folder written by :func:`foclip_train.reference.data.build_dataset`.
        logs: open_clip_train's ``--logs`` folder.
        name: run name (its folder under ``logs``; the same name resumes).
        workers: data-loader worker processes.

    Returns:
        The argv list for ``open_clip_train.main.main``.
    """
    return [
        "--model", recipe.model,
        "--train-data", str(data_dir / "train.csv"),
        "--val-data", str(data_dir / "heldout.csv"),
        "--dataset-type", "csv", "--csv-img-key", "filepath", "--csv-caption-key", "caption",
        "--csv-separator", ",",
        "--batch-size", str(recipe.batch_size), "--epochs", str(recipe.epochs),
        "--lr", str(recipe.lr), "--warmup", str(recipe.warmup), "--wd", str(recipe.wd),
        "--seed", str(recipe.seed), "--workers", str(workers),
        "--device", "cpu", "--precision", "fp32",
        "--val-frequency", "1", "--save-frequency", "1", "--zeroshot-frequency", "0",
        "--log-every-n-steps", "5", "--report-to", "",
        "--logs", str(logs), "--name", name, "--resume", "latest",
    ] + (["--aug-cfg", f"scale=({recipe.crop_scale[0]}, {recipe.crop_scale[1]})"] if recipe.crop_scale else [])


def run_trainer(recipe: Recipe, data_dir: Path, logs: Path, name: str, workers: int = 1) -> Path:
    """Train (or resume) with open_clip_train and return the last epoch checkpoint.

    Raises:
        InputError: the data folder lacks its CSVs.
        FoclipError: the trainer exits with an error.
        MissingExtraError: open_clip_train's dependencies are missing.
    """
    for f in ("train.csv", "heldout.csv"):
        if not (data_dir / f).is_file():
            raise InputError(f"data folder {str(data_dir)!r}", f"has no {f}",
                             "a folder written by `foclip reference build` (data step)")
    for mod in ("pandas", "webdataset", "braceexpand"):
        require(mod, "train")
    main = require("open_clip_train.main", "train")
    from foclip.models.loader import register_configs

    register_configs()
    with _logging_restored():
        code = main.main(trainer_argv(recipe, data_dir, logs, name, workers))
    if code not in (None, 0):
        raise FoclipError(f"open_clip_train run {name!r}", f"exited with code {code}",
                          f"a fresh --name or the same data (see {logs / name / 'out.log'})")
    ckpt = logs / name / "checkpoints" / f"epoch_{recipe.epochs}.pt"
    if not ckpt.is_file():
        raise FoclipError(f"run {name!r}", f"left no {ckpt.name}", "a finished training run")
    return ckpt


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    # open_clip_train's setup_logging sets every logger to INFO and adds root handlers; undo that
    # so a caller's logging (and torch's at-exit INFO dumps) are as they were.
    root = logging.getLogger()
    levels = {n: lg.level for n, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    state = (root.level, list(root.handlers))
    try:
        yield
    finally:
        for h in root.handlers[len(state[1]):] if root.handlers[: len(state[1])] == state[1] else []:
            h.close()
        root.setLevel(state[0])
        root.handlers[:] = state[1]
        for n, lg in logging.root.manager.loggerDict.items():
            if isinstance(lg, logging.Logger):
                lg.setLevel(levels.get(n, logging.NOTSET))


def to_safetensors(ckpt: Path, dst: Path) -> str:
    """Write the trainer checkpoint's weights as fp16 safetensors (atomically).

    Args:
        ckpt: an ``epoch_N.pt`` written by open_clip_train.
        dst: the ``.safetensors`` file to write.

    Returns:
        The sha256 of the written file.
    """

    import torch
    from safetensors.torch import save_file

    state = torch.load(str(ckpt), map_location="cpu", weights_only=False)["state_dict"]
    sd = {k.removeprefix("module."): v.detach().to(torch.float16).contiguous()
          if v.is_floating_point() else v.contiguous() for k, v in state.items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt", "source": ckpt.name})
    os.replace(tmp, dst)
    return hashlib.sha256(dst.read_bytes()).hexdigest()


_STEP = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/(\d+).*?Contrastive_loss: ([0-9.]+)")


def training_curve(run_dir: Path) -> dict[str, list]:
    """Train loss per logged step (from ``out.log``) and held-out metrics per epoch (``results.jsonl``).

    Returns:
        ``{"train": [(epoch_float, loss)...], "val": [{epoch, clip_val_loss, ...}...]}``.
    """
    train = []
    log = run_dir / "out.log"
    if log.is_file():
        for m in _STEP.finditer(log.read_text(errors="replace")):
            ep, done, total, loss = int(m[1]), int(m[2]), int(m[3]), float(m[4])
            train.append((ep + done / total, loss))
    val = []
    res = run_dir / "checkpoints" / "results.jsonl"
    if res.is_file():
        val = [json.loads(line) for line in res.read_text().splitlines() if line.strip()]
    return {"train": train, "val": val}
