"""Issue 32.3/32.4: one writer per output. Two runs on one output: the second is refused in one line
naming the first's PID; a lock left by a killed run is taken over.

The first run is paused at a known point by a small wrapper (a file it waits for), so that the two
runs overlap on any machine, however slow or busy; nothing else of foclip is replaced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import waits
from PIL import Image

# Runs `foclip ARGS` with one function wrapped: after its first call (or first yielded item) it
# touches STARTED and waits for GO, so the run holds its output open while the test acts.
PAUSED = r"""
import functools, importlib, os, sys, time
started, go, target, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
module_name, _, attr = target.rpartition(":")
owner_path, _, name = attr.rpartition(".")
owner = importlib.import_module(module_name)
for part in filter(None, owner_path.split(".")):
    owner = getattr(owner, part)
original = getattr(owner, name)

def pause():
    open(started, "w").close()
    while not os.path.exists(go):
        time.sleep(0.05)

if name == "detect_iter":
    def wrapped(self, *a, **k):
        for i, item in enumerate(original(self, *a, **k)):
            yield item
            if i == 0:
                pause()
else:
    def wrapped(*a, **k):
        pause()
        return original(*a, **k)
setattr(owner, name, functools.wraps(original)(wrapped))
from foclip.cli.main import main
sys.exit(main(argv))
"""


def _foclip(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "foclip.cli.main", *argv], check=False, capture_output=True,
                          text=True,
                          timeout=waits.ceiling(300))


def _paused(tmp_path: Path, target: str, *argv: str) -> tuple[subprocess.Popen, Path]:
    started, go = tmp_path / "started", tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", PAUSED, str(started), str(go), target, *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the first run exited early ({proc.returncode}): {proc.stderr.read()}")
        return started.exists()

    waits.wait_until(ready, "the first run to reach its pause point", 300)
    return proc, go


@pytest.fixture()
def photos(tmp_path, sample_photos) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(12):  # small copies: the point is the rows, not the scores
        arr = list(sample_photos.values())[i % 4]
        Image.fromarray(arr).resize((96, 96)).save(d / f"p{i:02d}.png")
    return d


def _one_line_naming(err: str, pid: int) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and f"PID {pid}" in lines[0], err


def test_a_second_detect_on_the_same_results_file_is_refused(tiny_bundle, photos, tmp_path):
    out = tmp_path / "r.jsonl"
    first, go = _paused(tmp_path, "foclip.runtime.detector:Detector.detect_iter",
                        "detect", str(tiny_bundle), str(photos), "--out", str(out))
    try:
        second = _foclip("detect", str(tiny_bundle), str(photos), "--out", str(out))
    finally:
        go.touch()
        first.wait(waits.ceiling(300))
    assert second.returncode == 1, second.stderr
    _one_line_naming(second.stderr, first.pid)
    assert first.returncode in (0, 3), first.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == 12 and len(set(ids)) == 12  # 9b2574a: both wrote every row (duplicates)
    assert not list(tmp_path.glob(".r.jsonl.lock"))


def test_a_second_export_into_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "X"
    first, go = _paused(tmp_path, "foclip.exporter.bundle:_publish",
                        "export", "--out", str(out), "--model", "foclip-tiny", "--pretrained", "random",
                        "--precision", "fp32,int8", "--prompts", "imagenet-10")
    try:
        second = _foclip("export", "--out", str(out), "--model", "foclip-tiny", "--pretrained", "random",
                         "--precision", "fp32", "--seed", "3")
    finally:
        go.touch()
        first.wait(waits.ceiling(300))
    assert second.returncode == 1, second.stdout + second.stderr
    _one_line_naming(second.stderr, first.pid)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    # 9b2574a: the second export replaced the folder, and the first's int8 graph was gone
    assert "image_encoder.int8.onnx" in manifest["files"] and (out / "image_encoder.int8.onnx").is_file()


def test_a_killed_runs_lock_is_taken_over(tiny_bundle, photos, tmp_path):
    out = tmp_path / "r.jsonl"
    first, _go = _paused(tmp_path, "foclip.runtime.detector:Detector.detect_iter",
                         "detect", str(tiny_bundle), str(photos), "--out", str(out))
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    lock = tmp_path / ".r.jsonl.lock"
    assert f"PID {first.pid}" in lock.read_text()  # left behind by the kill
    again = _foclip("detect", str(tiny_bundle), str(photos), "--out", str(out))
    assert again.returncode in (0, 3), again.stderr
    assert "resumed" in again.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 12
    assert not lock.exists()


@pytest.mark.parametrize("rows_before_interrupt", [0, 1])
def test_an_interrupted_detect_keeps_rows_and_removes_an_empty_output(tiny_bundle, photos, tmp_path, monkeypatch,
                                                                      rows_before_interrupt):
    """Ctrl-C: rows already written stay for the rerun to resume from; a results file without a row goes."""
    from foclip.cli.main import main
    from foclip.runtime.detector import Detector

    real = Detector.detect_iter

    def interrupted(self, *a, **k):
        for i, item in enumerate(real(self, *a, **k)):
            if i == rows_before_interrupt:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(Detector, "detect_iter", interrupted)
    out = tmp_path / "new" / "r.jsonl"
    assert main(["detect", str(tiny_bundle), str(photos), "--out", str(out)]) == 130
    if rows_before_interrupt:
        assert len(out.read_text().splitlines()) == 1 and (tmp_path / "new" / "r.jsonl.meta.json").is_file()
    else:
        assert not (tmp_path / "new").exists()  # the file, its meta file and the folder made for them
    assert not (tmp_path / "new" / ".r.jsonl.lock").exists()
