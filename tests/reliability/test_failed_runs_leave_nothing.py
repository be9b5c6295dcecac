"""Issue 36.2: a command that fails leaves nothing it created (files and folders), and what existed
before the failure stays byte for byte. Each case runs a failing command in an empty working folder
and compares the folder tree before and after."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest
from PIL import Image

from foclip.cli.main import main


def tree(root: Path) -> dict[str, str]:
    """Every path below ``root`` (hidden ones too): ``dir`` for folders, the sha256 of files."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture()
def work(tmp_path, monkeypatch, sample_photos, tiny_bundle):
    """A working folder with a few photos, a generate-like folder and a copy of the tiny bundle."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "imgs").mkdir()
    for d in ("gen/original", "gen/manipulated"):
        (tmp_path / d).mkdir(parents=True)
    for name, arr in sample_photos.items():
        small = arr[::8, ::8]
        Image.fromarray(small).save(tmp_path / "imgs" / f"{name}.png")
        Image.fromarray(small).save(tmp_path / "gen/original" / f"{name}.png")
        Image.fromarray(small[:, :, ::-1].copy()).save(tmp_path / "gen/manipulated" / f"{name}.png")
    shutil.copytree(tiny_bundle, tmp_path / "B")
    return tmp_path


def _fails_and_leaves_nothing(work: Path, argv: list[str]) -> None:
    before = tree(work)
    assert main(argv) == 1, argv
    after = tree(work)
    assert after == before, f"{' '.join(argv)} left {sorted(set(after) - set(before))}, changed " \
                            f"{sorted(k for k in before if k in after and after[k] != before[k])}"


FAILING = {
    # 9b2574a: each of these left an output (mostly an empty folder) behind
    "generate, unknown model": ["generate", "imgs", "--out", "advx", "--model", "ViT-B-23", "--pretrained", "random"],
    "generate, weights offline": ["generate", "imgs", "--out", "adv", "--model", "ViT-B-32",
                                  "--pretrained", "laion2b_s34b_b79k"],
    "generate, nested output": ["generate", "imgs", "--out", "runs/a/adv", "--model", "ViT-B-23", "--pretrained",
                                "random"],
    "export, unknown model": ["export", "--out", "out/bundle", "--model", "ViT-B-23", "--pretrained", "random"],
    "calibrate, same sets": ["calibrate", "B", "--originals", "gen/original", "--manipulated", "gen/original",
                             "--out", "cal/calibration.json", "--plots", "plots"],
    "calibrate, bad precision": ["calibrate", "B", "--originals", "gen", "--out", "cal/calibration.json",
                                 "--precision", "fp64"],
    "detect, bad precision": ["detect", "B", "imgs", "--out", "res/r.jsonl", "--precision", "fp64"],
    "bench detect, missing calibration": ["bench", "detect", "B", "imgs", "--out", "bench/b.json", "--skip-torch",
                                          "--calibration", "nope.json"],
    "reproduce, unknown model": ["reproduce", "imgs", "--out", "rep", "--model", "ViT-B-23", "--pretrained",
                                 "random", "--quick"],
    "reproduce, weights offline": ["reproduce", "imgs", "--out", "rep", "--model", "ViT-B-32", "--pretrained",
                                   "laion2b_s34b_b79k", "--quick"],
    "build-engine without TensorRT": ["build-engine", "B"],
}


@pytest.mark.parametrize("argv", list(FAILING.values()), ids=list(FAILING))
def test_a_failed_command_leaves_nothing_behind(work, argv):
    _fails_and_leaves_nothing(work, argv)


def test_reference_build_without_its_debian_packages_leaves_nothing(work, monkeypatch):
    from foclip_train.reference import data

    real = data.check_sources
    # the real check, pointed at a clip-art folder that is not installed
    monkeypatch.setattr(data, "check_sources",
                        lambda cfg: real(dataclasses.replace(cfg, clipart_root=work / "no-openclipart")))
    _fails_and_leaves_nothing(work, ["reference", "build", "--epochs", "1"])  # reference_work/, reference_out/


def test_a_failure_leaves_an_earlier_output_untouched(work):
    """Outputs that existed before the failing run (results of an earlier run) stay as they were."""
    assert main(["detect", "B", "imgs", "--out", "res/r.jsonl"]) in (0, 3)
    _fails_and_leaves_nothing(work, ["detect", "B", "imgs", "--out", "res/r.jsonl", "--precision", "fp64"])
    assert main(["calibrate", "B", "--originals", "gen", "--out", "cal.json", "--folds", "0"]) == 0
    _fails_and_leaves_nothing(work, ["calibrate", "B", "--originals", "gen", "--out", "cal.json", "--folds", "0",
                                     "--plots", "new/plots", "--precision", "fp64"])
