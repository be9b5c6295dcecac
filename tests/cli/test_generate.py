"""`foclip generate` end to end: outputs, corrupt inputs, resume after SIGKILL, --ray wiring."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from waits import ceiling, wait_until

from foclip.cli.main import main

TINY = ["--model", "foclip-tiny", "--pretrained", "random", "--device", "cpu"]


def _manifest(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_generate_writes_the_layout_and_reports_corrupt_inputs(tmp_path, sample_photo_dir, capsys):
    src = tmp_path / "in"
    shutil.copytree(sample_photo_dir, src)
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.png").write_text("not an image")
    jpg = (src / "chelsea.jpg").read_bytes()
    (src / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    out = tmp_path / "out"
    code = main(["generate", str(src), "--out", str(out), "--iters", "3", "--batch", "3", *TINY])
    assert code == 1
    text = capsys.readouterr().out
    for bad in ("empty.jpg", "notes.png", "cut.jpg"):
        assert f"FAILED {src / bad}" in text.replace("\n", "")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 4 and summary["failures"] == 3 and summary["score_scale"] == 100.0
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        with Image.open(out / "manipulated" / f"{name}.png") as im:
            assert im.mode == "RGB"
        assert len(list((out / "original").glob(f"{name}.*"))) == 1
    recs = _manifest(out)
    assert {r["name"] for r in recs if not r["error"]} == {"astronaut", "chelsea", "coffee", "rocket"}
    assert all(r["score_scale"] == 100.0 and r["iters"] == 3 for r in recs)


def test_generate_output_is_8bit_png_of_input_size(tmp_path, sample_photo_dir):
    out = tmp_path / "out"
    assert main(["generate", str(sample_photo_dir / "rocket.jpg"), str(sample_photo_dir / "coffee.png"),
                 "--out", str(out), "--iters", "2", *TINY]) == 0
    for name, src in (("rocket", "rocket.jpg"), ("coffee", "coffee.png")):
        with Image.open(out / "manipulated" / f"{name}.png") as im, Image.open(sample_photo_dir / src) as orig:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == orig.size


def test_resume_after_sigkill(tmp_path, sample_photo_dir):
    src = tmp_path / "in"
    shutil.copytree(sample_photo_dir, src)
    out = tmp_path / "out"
    def args(batch: int) -> list[str]:
        return [sys.executable, "-m", "foclip.cli.main", "generate", str(src), "--out", str(out),
                "--iters", "150", "--batch", str(batch), *TINY]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args(1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)

    def first_image_written() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"generate exited with {proc.returncode} before the kill:\n{proc.stderr.read().decode()[-2000:]}")
        return bool(_manifest(out))

    try:  # the signal that the run is mid-way: its first manifest line (start-up is slow on a busy machine)
        wait_until(first_image_written, "the first manifest line of generate", 900, interval=0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first = _manifest(out)
    assert 1 <= len(first) < 4, f"kill did not land mid-run ({len(first)} done)"
    done = subprocess.run(args(2), check=False, capture_output=True, text=True, env=env, timeout=ceiling(1200))
    assert done.returncode == 0, done.stderr
    recs = _manifest(out)
    counts = Counter(r["source"] for r in recs)
    assert sorted(Path(s).name for s in counts) == sorted(p.name for p in src.iterdir())
    assert set(counts.values()) == {1}, counts
    assert recs[: len(first)] == first
    pngs = sorted(p.name for p in (out / "manipulated").iterdir() if not p.name.startswith("."))
    assert pngs == ["astronaut.png", "chelsea.png", "coffee.png", "rocket.png"]


def test_ray_flag_without_distributed_module_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import foclip.cli.generate as gen

    real = importlib.import_module

    def missing(name: str, *a):
        if name == "foclip_train.distributed":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *a)

    monkeypatch.setattr(gen.importlib, "import_module", missing)
    assert main(["generate", "x.png", "--out", str(tmp_path), "--ray", *TINY]) == 1
    assert "foclip_train.distributed is missing" in capsys.readouterr().err


def test_address_needs_ray(tmp_path, capsys):
    assert main(["generate", "x.png", "--out", str(tmp_path), "--address", "auto", *TINY]) == 1
    assert "--address" in capsys.readouterr().err


def test_workers_needs_ray(tmp_path, capsys):
    assert main(["generate", "x.png", "--out", str(tmp_path), "--workers", "2", *TINY]) == 1
    assert "--workers | only applies with --ray" in capsys.readouterr().err


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["generate", str(tmp_path / "empty"), "--out", str(tmp_path / "out"), *TINY]) == 1
    assert "hold no image files" in capsys.readouterr().err


def test_typo_in_an_input_path_stops_before_the_model_loads(tmp_path, sample_photo_dir, capsys, monkeypatch):
    import foclip_train.generate as gen

    def no_loading(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(gen, "load_resources", no_loading)
    (tmp_path / "photos").mkdir()
    out = tmp_path / "out"
    assert main(["generate", str(tmp_path / "photo"), "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err
    assert "does not exist (did you mean" in err and "photos" in err and err.count("error:") == 1
    assert not out.exists()  # nothing created, no progress bar, no summary of dashes
    assert main(["generate", str(tmp_path / "photos"), "--out", str(out), *TINY]) == 1
    assert "hold no image files" in capsys.readouterr().err
    assert main(["generate", str(sample_photo_dir), "--out", str(out), *TINY, "--pretrained",
                 str(tmp_path / "w.pt")]) == 1
    assert "checkpoint" in capsys.readouterr().err


def test_eta_line_projects_measured_steps():
    from foclip.cli.generate import eta_line

    line = eta_line(seconds_per_step=0.5, batch_n=4, image_steps_left=12 * 1000, iters=1000, n_images=12,
                    device="cpu")
    # 0.5 s a step for 4 images -> 0.125 s an image-step -> 1500 s for 12,000 image-steps
    assert line.startswith("estimate: 12 image(s) x 1000 steps at 0.50 s a step (batch of 4, cpu) -> about 25.0 min")
    assert "--iters 100 would take about 2.5 min." in line


def test_long_run_prints_an_estimate_and_no_nan(tmp_path, sample_photo_dir, capsys, monkeypatch):
    # A 30 s projection is the bar for printing; the tiny model is fast, so its clock runs slow here:
    # every reading is 1000 s after the previous one.
    calls = iter(range(10**6))
    monkeypatch.setattr("time.perf_counter", lambda: float(next(calls)) * 1000.0)
    out = tmp_path / "out"
    assert main(["generate", str(sample_photo_dir / "rocket.jpg"), "--out", str(out), "--iters", "12",
                 "--check-every", "5", *TINY]) == 0
    text = capsys.readouterr().out
    assert "estimate: 1 image(s) x 12 steps at " in text.replace("\n", " ")
    assert "nan" not in text
