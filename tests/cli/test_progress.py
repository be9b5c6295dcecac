"""Progress off a terminal: plain lines every few seconds (what, done/total, rate, time left), never bar fragments;
long commands say up front how long they will take (issue 36: `reproduce` printed nothing for ~10 min in a CI log,
then `━━━ 32… 0:…`)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from waits import ceiling, wait_until

from foclip.cli.main import main
from foclip.cli.progress import Estimator, PlainProgress, duration, make_progress

ROOT = Path(__file__).resolve().parents[2]
PLAIN = re.compile(r"^progress: image-steps \d+/\d+ \(\d+ %\)(, [\d.e+]+/s)?")
BAR_PIECES = ("\r", "\x1b[", "…")
TABLE_LINE = re.compile(r"[┏┡└┗┃│]")  # the summary table's own rules are drawn with ━ too


def bar_fragments(text: str) -> list[str]:
    """Lines that look like a progress bar cut off a terminal (``━━━ 32… 0:…``), or carry a redraw."""
    return [line for line in text.splitlines()
            if any(p in line for p in BAR_PIECES) or ("━" in line and not TABLE_LINE.search(line))]


def _file_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=100, color_system=None), buf


def test_make_progress_draws_bars_on_a_terminal_and_lines_elsewhere():
    assert isinstance(make_progress(console=Console(file=io.StringIO(), force_terminal=True)), Progress)
    console, _ = _file_console()
    assert isinstance(make_progress(console=console), PlainProgress)
    assert isinstance(make_progress(console=console, disable=True), Progress)  # disabled: nothing at all


def test_plain_progress_prints_what_done_total_rate_and_time_left():
    console, buf = _file_console()
    with PlainProgress(console, interval=0.05) as p:
        work = p.add_task("[bold]work", total=10, info="")
        other = p.add_task("images", total=2)
        for _ in range(3):
            p.advance(work)
        p.update(work, info="score now 3.2")
        wait_until(lambda: "progress:" in buf.getvalue(), "a plain progress line", 30, interval=0.02)
        p.update(other, advance=2)
    lines = buf.getvalue().splitlines()
    first = next(line for line in lines if line.startswith("progress:"))
    assert re.match(r"progress: work 3/10 \(30 %\), [\d.e+]+/s, \d+ (s|min \d\d s) left \| score now 3.2 \| "
                    r"images 0/2 \(0 %\)$", first), first
    assert lines[-1].startswith("done: work 3/10") and "images 2/2 (100 %)" in lines[-1]
    assert not bar_fragments(buf.getvalue()) and "━" not in buf.getvalue()


def test_a_run_shorter_than_one_interval_prints_only_its_closing_line():
    console, buf = _file_console()
    with PlainProgress(console, interval=60) as p:
        p.update(p.add_task("work", total=1, info=""), advance=1, info="every image already done (resumed)")
    assert re.fullmatch(r"done: work 1/1 \(100 %\), [\d.e+]+/s \| every image already done \(resumed\)\n",
                        buf.getvalue()), buf.getvalue()
    console, buf = _file_console()
    with PlainProgress(console, interval=60, transient=True) as p:  # rich erases transient bars: nothing
        p.advance(p.add_task("work", total=3), 3)
    assert buf.getvalue() == ""


def test_estimator_speaks_once_for_long_work_only():
    est = Estimator(min_seconds=0.0, min_total_seconds=0.0)
    est.start("steps")
    time.sleep(0.01)
    line = est.line("steps", "image-steps", 1, 1000, "Ctrl-C stops.")
    assert line.startswith("estimate: image-steps: 999 left at ") and "done near " in line and line.endswith("Ctrl-C stops.")
    assert est.line("steps", "image-steps", 2, 1000) is None  # once
    short = Estimator(min_seconds=0.0, min_total_seconds=3600.0)
    short.start("k")
    assert short.line("k", "x", 5, 10) is None  # a short run needs no estimate
    assert duration(42) == "42 s" and duration(425) == "7 min 05 s" and duration(3720) == "1 h 02 min"


def test_generate_off_a_terminal_prints_plain_lines_and_no_bar(sample_photo_dir, tmp_path):
    """`foclip generate ... | tee log`: stdout is a pipe, so plain progress lines, not bar fragments."""
    env = {**os.environ, "FOCLIP_PROGRESS_SECONDS": "0.2", "COLUMNS": "100", "PYTHONPATH": str(ROOT)}
    photos = sorted(str(p) for p in sample_photo_dir.iterdir())[:2]
    proc = subprocess.run(
        [sys.executable, "-m", "foclip.cli.main", "generate", *photos, "--out", str(tmp_path / "adv"),
         "--model", "foclip-tiny", "--pretrained", "random", "--device", "cpu", "--iters", "20", "--batch", "2",
         "--space", "model"],
        capture_output=True, text=True, env=env, timeout=ceiling(300), cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    plain = [line for line in lines if PLAIN.match(line)]
    assert plain, proc.stdout[-3000:]
    assert any(line.startswith("done: image-steps 40/40 (100 %)") for line in lines), proc.stdout[-3000:]
    assert not bar_fragments(proc.stdout), bar_fragments(proc.stdout)


def test_bench_generate_prints_an_estimate_before_the_timed_rounds(capsys):
    assert main(["bench", "generate", "--model", "foclip-tiny", "--pretrained", "random", "--batch", "1",
                 "--iters", "2", "--rounds", "1", "--no-native"]) == 0
    out = capsys.readouterr().out
    estimate = out.index("estimate: bench generate, 1 round(s) x 2 steps x batch 1 -> about ")
    assert estimate < out.index("image-iters/s")  # before the table the rounds fill


def test_reproduce_prints_an_estimate_once_its_first_steps_are_timed():
    from foclip.cli.reproduce import RichProgress

    console, buf = _file_console()
    with PlainProgress(console, interval=60) as bars:
        sink = RichProgress(bars, console)
        sink.estimator = Estimator(min_seconds=0.0, min_total_seconds=0.0)
        sink.start("steps", "FoCLIP image-steps", 400)
        time.sleep(0.01)
        sink.advance("steps", 4)
        sink.advance("steps", 4)
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("estimate:")]
    assert len(lines) == 1 and lines[0].startswith("estimate: FoCLIP image-steps: 396 left at "), buf.getvalue()
    assert lines[0].endswith("Ctrl-C stops; a rerun resumes.")
