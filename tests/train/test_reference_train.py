"""Tests of foclip_train/reference/train.py: open_clip_train's argv, a real tiny run, conversion."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from foclip.errors import InputError
from foclip.models import load_clip
from foclip_train.reference.train import (
    RECIPES,
    Recipe,
    recipe_for,
    run_trainer,
    to_safetensors,
    trainer_argv,
    training_curve,
)


def test_argv_is_open_clip_trains_own_flags(tmp_path):
    pytest.importorskip("open_clip_train")
    from open_clip_train.params import parse_args

    argv = trainer_argv(recipe_for("foclip-ref-vit"), tmp_path, tmp_path / "logs", "run")
    args = parse_args(argv)  # the trainer's own parser accepts every flag
    assert args.model == "foclip-ref-vit" and args.device == "cpu" and args.precision == "fp32"
    assert args.resume == "latest" and args.seed == 0 and args.epochs == RECIPES["foclip-ref-vit"].epochs
    assert args.train_data.endswith("train.csv") and args.val_data.endswith("heldout.csv")
    assert args.aug_cfg == {}  # open_clip's default crop; no colour or grayscale augmentation
    import dataclasses

    wide = dataclasses.replace(recipe_for("foclip-ref-rn"), crop_scale=(0.5, 1.0))
    assert parse_args(trainer_argv(wide, tmp_path, tmp_path / "logs", "run")).aug_cfg == {"scale": (0.5, 1.0)}


def test_unknown_model_and_missing_data(tmp_path):
    with pytest.raises(InputError, match="has no reference recipe"):
        recipe_for("ViT-B-32")
    with pytest.raises(InputError, match="has no train.csv"):
        run_trainer(Recipe("foclip-tiny", epochs=1), tmp_path, tmp_path / "logs", "x")


@pytest.fixture()
def tiny_csv(tmp_path):
    """24 coloured squares captioned by their colour, as train.csv / heldout.csv."""
    d = tmp_path / "data"
    (d / "images").mkdir(parents=True)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
    lines = ["filepath,caption,source,category"]
    for i in range(24):
        name = list(colours)[i % 4]
        p = d / "images" / f"{i}.png"
        Image.new("RGB", (64, 64), tuple(min(255, c + i) for c in colours[name])).save(p)
        lines.append(f'{p},"a {name} square, a clip art of shapes",openclipart,shapes')
    (d / "train.csv").write_text("\n".join(lines[:17]) + "\n")
    (d / "heldout.csv").write_text("\n".join([lines[0]] + lines[17:]) + "\n")
    return d


def test_tiny_run_resumes_converts_and_loads(tiny_csv, tmp_path):
    pytest.importorskip("open_clip_train")
    recipe = Recipe("foclip-tiny", epochs=2, batch_size=8, warmup=1)
    logs = tmp_path / "logs"
    ckpt = run_trainer(recipe, tiny_csv, logs, "tiny", workers=0)
    assert ckpt.name == "epoch_2.pt"
    stamp = ckpt.stat().st_mtime_ns
    assert run_trainer(recipe, tiny_csv, logs, "tiny", workers=0) == ckpt  # resumes: nothing left to do
    assert ckpt.stat().st_mtime_ns == stamp
    curve = training_curve(logs / "tiny")
    assert curve["train"] and [v["epoch"] for v in curve["val"]] == [1, 2]
    dst = tmp_path / "tiny.safetensors"
    sha = to_safetensors(ckpt, dst)
    assert len(sha) == 64
    loaded = load_clip("foclip-tiny", str(dst))
    trained = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    key = "visual.proj"
    assert torch.allclose(loaded.model.state_dict()[key], trained[key].float(), atol=1e-3)
    json.dumps(curve)  # the card stores it as JSON
