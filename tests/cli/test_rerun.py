"""Reruns that notice (issue 25): other settings are refused in one line naming them and the flag that
starts fresh; the same settings resume; `--pretrained` never defaults to random weights."""

from __future__ import annotations

import json

import pytest

from foclip.cli.main import main

TINY = ["--model", "foclip-tiny", "--pretrained", "random", "--device", "cpu"]


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())  # rich wraps long lines at the console width


def test_generate_rerun_with_other_settings_is_refused_and_fresh_starts_over(tmp_path, sample_photo_dir, capsys):
    out = tmp_path / "adv"
    photo = str(sample_photo_dir / "rocket.jpg")
    assert main(["generate", photo, "--out", str(out), "--iters", "2", *TINY]) == 0
    first = (out / "manifest.jsonl").read_text()
    capsys.readouterr()
    # The case: another model, prompt set and step count once printed "nothing to do".
    rc = main(["generate", photo, "--out", str(out), "--iters", "3", "--prompts", "masterpieces", *TINY])
    err = one_line(capsys)
    assert rc == 1, err
    assert "prompts artistic (this run: masterpieces)" in err and "iters 2 (this run: 3)" in err
    assert "--fresh" in err and "nothing to do" not in err
    assert (out / "manifest.jsonl").read_text() == first  # nothing touched
    # The same settings resume (nothing left to do), batch size does not define the images.
    assert main(["generate", photo, "--out", str(out), "--iters", "2", "--batch", "2", *TINY]) == 0
    assert "nothing to do" in capsys.readouterr().out
    # --fresh discards the earlier run and makes the folder anew with the new settings.
    assert main(["generate", photo, "--out", str(out), "--iters", "3", "--fresh", *TINY]) == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["iters"] for r in records] == [3]


def test_generate_rerun_with_an_edited_prompt_file_is_refused(tmp_path, sample_photo_dir, capsys):
    out, prompts = tmp_path / "adv", tmp_path / "p.txt"
    prompts.write_text("a red apple\n")
    photo = str(sample_photo_dir / "rocket.jpg")
    assert main(["generate", photo, "--out", str(out), "--iters", "1", "--prompts", str(prompts), *TINY]) == 0
    prompts.write_text("a green apple\n")
    capsys.readouterr()
    assert main(["generate", photo, "--out", str(out), "--iters", "1", "--prompts", str(prompts), *TINY]) == 1
    err = one_line(capsys)
    assert "prompts file:p (sha256" in err and "--fresh" in err


@pytest.mark.parametrize("command", [["generate", "x.png", "--out", "o"], ["export", "--out", "b"],
                                     ["bench", "generate"]])
def test_pretrained_is_required_for_models_without_reference_weights(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.png").write_bytes(b"")
    assert main([*command, "--model", "ViT-B-32"]) == 1
    err = one_line(capsys)
    assert "--model ViT-B-32 | needs --pretrained" in err and "`random`" in err
    assert not (tmp_path / "b").exists() and not (tmp_path / "o").exists()


def test_pretrained_defaults_to_reference_for_reference_models():
    import argparse

    from foclip.cli.common import resolve_pretrained
    from foclip.cli.generate import config_from_args
    from foclip.cli.main import parse

    assert resolve_pretrained("foclip-ref-rn", None) == "reference"
    assert resolve_pretrained("ViT-B-32", "random") == "random"
    args = parse(["generate", "x.png", "--out", "o", "--model", "foclip-ref-vit"])
    assert isinstance(args, argparse.Namespace) and config_from_args(args).pretrained == "reference"


@pytest.mark.parametrize("command", ["generate", "export", "reproduce"])
def test_help_never_calls_random_the_default(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps help at hyphens ("clipart-\nheldout")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: random" not in text and "random` (default" not in text and "only when typed" in text
    for name in ("masterpieces", "artistic", "imagenet-N", "clipart", "clipart-heldout"):
        assert name in text  # the prompt sets come from foclip.prompts' registry


def test_a_killed_export_leaves_nothing_a_later_export_trips_over(tmp_path, capsys):
    """SIGKILL an export mid-build: its hidden partial folder is removed by the next export, which says so."""
    import os
    import signal
    import subprocess
    import sys
    import time

    scale = float(os.environ.get("FOCLIP_TEST_TIMEOUT_SCALE", "1"))
    out = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "foclip.cli.main", "export", "--out", str(out), "--model",
                             "foclip-tiny", "--pretrained", "random", "--precision", "fp32"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 120 * scale
    try:
        while not list(tmp_path.glob(".b.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.glob(".b.partial-*")), "the export never started building"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = list(tmp_path.glob(".b.partial-*"))
    if out.exists():  # the kill came after the bundle was published: nothing is left to clean
        assert not left
        return
    assert left and str(proc.pid) in left[0].name
    assert main(["export", "--out", str(out), "--model", "foclip-tiny", "--pretrained", "random",
                 "--precision", "fp32"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"removed {left[0].name}, the unfinished build of an export that was killed" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_an_export_killed_between_its_renames_gets_its_old_bundle_back(tmp_path):
    from foclip.exporter.bundle import clean_leftovers

    out = tmp_path / "b"
    (tmp_path / ".b.old-x1y2" / "bundle").mkdir(parents=True)
    (tmp_path / ".b.old-x1y2" / "bundle" / "manifest.json").write_text("{}")
    (tmp_path / ".b.partial-1-zz").mkdir()  # named by a live process (pid 1): left alone
    (tmp_path / ".b.partial-abc").mkdir()   # from a foclip that did not name its pid
    lines = clean_leftovers(out)
    assert (out / "manifest.json").is_file() and not (tmp_path / ".b.old-x1y2").exists()
    assert not (tmp_path / ".b.partial-abc").exists() and (tmp_path / ".b.partial-1-zz").exists()
    assert any("restored b" in line for line in lines)


def _detect_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_detect_out_resumes_cuts_a_torn_line_and_refuses_other_settings(tiny_bundle, sample_photo_dir, tmp_path,
                                                                         capsys):
    out = tmp_path / "r.jsonl"
    base = ["detect", str(tiny_bundle), str(sample_photo_dir), "--threads", "1", "--exit-zero", "--out", str(out)]
    assert main(base) == 0
    full = _detect_rows(out)
    n = len(full)
    assert json.loads((tmp_path / "r.jsonl.meta.json").read_text())["complete"] is True
    # What a kill leaves: two whole lines and a torn third, the run not marked complete.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1] + lines[2][:20])
    capsys.readouterr()
    assert main(base) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"resumed: 2 of {n} input(s)" in err
    rows = _detect_rows(out)
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in full)  # each once, none lost
    by_id = {r["id"]: r for r in full}
    assert all(r["score_color"] == pytest.approx(by_id[r["id"]]["score_color"]) for r in rows if not r["error"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl", "r.jsonl.meta.json"]  # no hidden temp files
    # Other settings: refused in one line naming them and --fresh; the file untouched.
    before = out.read_text()
    assert main([*base, "--precision", "int8"]) == 1
    err = one_line(capsys)
    assert "precision fp32 (this run: int8)" in err and "--fresh" in err and out.read_text() == before
    assert main([*base, "--precision", "int8", "--fresh"]) == 0
    assert {r["id"] for r in _detect_rows(out)} == {r["id"] for r in full}
    assert json.loads((tmp_path / "r.jsonl.meta.json").read_text())["settings"]["precision"] == "int8"


def test_detect_out_refuses_a_file_it_did_not_write(tiny_bundle, sample_photo_dir, tmp_path, capsys):
    out = tmp_path / "notes.csv"
    out.write_text("my,own,data\n")
    assert main(["detect", str(tiny_bundle), str(sample_photo_dir), "--threads", "1", "--out", str(out)]) == 1
    assert "--fresh" in one_line(capsys) and out.read_text() == "my,own,data\n"


def test_a_killed_detect_is_resumed_without_losing_or_repeating_rows(tiny_bundle, sample_photo_dir, tmp_path):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    scale = float(os.environ.get("FOCLIP_TEST_TIMEOUT_SCALE", "1"))
    photos = tmp_path / "photos"
    photos.mkdir()
    src = sorted(sample_photo_dir.iterdir())
    for i in range(400):
        shutil.copy(src[i % len(src)], photos / f"{i:03d}{src[i % len(src)].suffix}")
    out = tmp_path / "r.csv"
    cmd = [sys.executable, "-m", "foclip.cli.main", "detect", str(tiny_bundle), str(photos), "--batch", "1",
           "--threads", "1", "--exit-zero", "--no-self-check", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120 * scale
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if out.is_file() and out.read_text().count("\n") > 5:  # readiness: rows are being written
                break
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    written = out.read_text().count("\n") - 1
    assert 0 < written < 400, "the run was not killed midway"
    # no hidden temp file; the killed run's lock file stays until the next run takes it over
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] in ([], [".r.csv.lock"])
    assert main(["detect", str(tiny_bundle), str(photos), "--batch", "8", "--threads", "1", "--exit-zero",
                 "--no-self-check", "--out", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    import csv

    ids = [r["id"] for r in csv.DictReader(out.open())]
    assert sorted(ids) == sorted(str(p) for p in photos.iterdir())


def test_the_demo_starts_its_images_over_when_they_were_made_otherwise(tmp_path, capsys):
    from foclip.cli.demo import _fresh_if_changed
    from foclip.cli.main import parse
    from foclip.prompts import load_prompt_set

    adv = tmp_path / "generated"
    adv.mkdir()
    gen = ["generate", str(tmp_path / "photos"), "--out", str(adv), "--model", "foclip-tiny", "--pretrained",
           "random", "--prompts", "artistic", "--iters", "10", "--batch", "4"]
    record = {"source": "a.png", "model": "foclip-tiny", "pretrained": "random(seed=0)", "prompt_set": "artistic",
              "prompt_set_sha256": load_prompt_set("artistic").sha256, "iters": 10, "error": None}
    (adv / "manifest.jsonl").write_text(json.dumps(record) + "\n")
    assert _fresh_if_changed(gen, adv, parse) == []  # the same settings: the demo resumes
    (adv / "manifest.jsonl").write_text(json.dumps({**record, "iters": 200}) + "\n")  # e.g. a full demo's
    assert _fresh_if_changed(gen, adv, parse) == ["--fresh"]
    assert "starting them over" in capsys.readouterr().out
