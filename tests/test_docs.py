"""The README's Quick tour runs as written; every `foclip` line in README.md and docs/ parses.

The tour is read from README.md (the first code block under "## Quick tour" and the Python snippet
after it), not copied here, so a line that breaks fails this test. Its lines run **verbatim**: the
tour itself is offline and small (the reference CLIP foclip-ref-vit that ships in the package, the
clipart prompts, few steps), so nothing is substituted. The one change: ``foclip serve`` gets a free
``--port`` and the curl line follows it there, since port 8000 may be taken on a test machine. On
photos the reference CLIP scores low (it was trained on clip art): the tour checks mechanics, not
detection quality.

The real-weights variant (the second code block: ViT-B-32 with a LAION tag) needs a download, so
its lines are only parsed, like every other documented ``foclip`` line.

What the tour assumes is what README's main command leaves behind: the sample photos in
``demo_out/photos/`` (written here by the demo's own :func:`foclip.cli.demo.write_sample_photos`;
4 of its 7 photos, to keep the default suite's share small). The default suite runs the fast lines
(generate, export, inspect, calibrate, detect, the Python snippet); ``-m slow`` runs the whole tour,
with the service started and ``curl`` sent to it.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waits import ceiling, terminate, wait_until

from foclip.cli.main import build_parser, main, parse

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

# Per tour command: whether the default suite runs it (False: only under -m slow). A line with
# --ray also waits for -m slow (a Ray start-up takes tens of seconds).
FAST: dict[tuple[str, ...], bool] = {
    ("generate",): True,
    ("export",): True,
    ("inspect",): True,
    ("calibrate",): True,
    ("detect",): True,
    ("serve",): False,
    ("bench", "generate"): False,
    ("bench", "detect"): False,
    ("reproduce",): False,
}
OK_CODES = {("detect",): (0, 3)}  # 3: something was flagged, as the README says
OFFLINE_WEIGHTS = {"reference", "random"}
TOUR_PHOTOS = 4  # of the demo's 7 sample photos


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``[(language, body), ...]`` of the fenced code blocks of a markdown text."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def shell_lines(body: str) -> list[str]:
    """A shell block's commands, comments and blank lines dropped."""
    lines = [ln.split("  #", 1)[0].strip() for ln in body.splitlines()]
    return [ln for ln in lines if ln]


def tour_blocks() -> tuple[list[str], list[str], str]:
    """The Quick tour's offline lines, its real-weights lines and its Python snippet."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Quick tour", 1)[1].split("\n## ", 1)[0]
    blocks = code_blocks(section)
    shell = [body for lang, body in blocks if lang == ""]
    snippet = next(body for lang, body in blocks if lang == "python")
    return shell_lines(shell[0]), shell_lines(shell[1]), snippet


def tour() -> tuple[list[str], str]:
    """The Quick tour's offline shell lines and its Python snippet."""
    lines, _real, snippet = tour_blocks()
    return lines, snippet


def command_of(argv: list[str]) -> tuple[str, ...]:
    """``["bench", "detect", "b/"]`` -> ``("bench", "detect")``: the key of :data:`FAST`."""
    two = tuple(argv[:2])
    return two if two in FAST else tuple(argv[:1])


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.fixture()
def tour_folder(tmp_path, monkeypatch):
    """A fresh folder holding what README's main command leaves: sample photos in demo_out/photos/."""
    from foclip.cli.demo import write_sample_photos

    written = write_sample_photos(tmp_path / "demo_out" / "photos")
    for extra in written[TOUR_PHOTOS:]:
        extra.unlink()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_tour_line_parses_and_has_a_rule():
    """A new tour line must parse and say here whether the default suite runs it."""
    lines, real, snippet = tour_blocks()
    assert len(lines) >= 10 and "Detector.from_bundle" in snippet
    for line in lines + real:
        argv = shlex.split(line)
        if argv[0] == "curl":
            continue
        assert argv[0] == "foclip", line
        parse(argv[1:])  # SystemExit(2) fails the test with the usage error
        if line in lines:
            assert command_of(argv[1:]) in FAST, f"no rule for tour line: {line}"


def test_tour_is_offline_and_the_real_weights_variant_sits_beside_it():
    """The tour runs offline as written (reference weights only); ViT-B-32 with a LAION tag is shown
    beside it as the real-weights variant (issue 36: the tour's first line failed offline)."""
    lines, real, _ = tour_blocks()
    for line in lines:
        argv = shlex.split(line)
        model, weights = option(argv, "--model"), option(argv, "--pretrained")
        if model is not None:
            assert model.startswith("foclip-ref-"), f"the offline tour names a downloadable model: {line}"
        assert weights in (None, *OFFLINE_WEIGHTS), f"the offline tour names downloadable weights: {line}"
    assert any("--model ViT-B-32" in ln and "--pretrained laion2b_" in ln for ln in real), real
    assert {shlex.split(ln)[1] for ln in real} <= {shlex.split(ln)[1] for ln in lines} | {"reference"}


def test_calibration_precision_matches_detection_in_the_tour():
    """Every tour line that uses the calibration (and the snippet) runs at the precision it was made at
    (issue 25: calibrate ran at fp32, detect at int8)."""
    lines, snippet = tour()

    def precision(line: str) -> str:  # fp32: the default of calibrate, detect and serve
        return option(shlex.split(line), "--precision") or "fp32"

    cal = next(ln for ln in lines if ln.startswith("foclip calibrate"))
    users = [ln for ln in lines if "--calibration" in shlex.split(ln)]
    assert len(users) >= 2
    for line in users:
        assert precision(line) == precision(cal), line
    assert f'precision="{precision(cal)}"' in snippet


def run_tour(folder: Path, slow: bool, capsys, node) -> list[str]:
    """Run the tour's lines in order, verbatim (the default suite's part, or all); returns what ran.

    How long each step took goes to the test's user properties (``--junitxml`` writes them), not
    to the terminal, where it would break pytest's progress line.
    """
    lines, snippet = tour()
    ran: list[tuple[str, float]] = []
    server = None
    try:
        for line in lines:
            t0 = time.perf_counter()
            argv = shlex.split(line)
            if argv[0] == "curl":
                if not slow:
                    continue
                run_curl(argv, server[1])
            else:
                key = command_of(argv[1:])
                if not ((FAST[key] and "--ray" not in argv) or slow):
                    continue
                if key == ("serve",):
                    server = start_serve(argv[1:])
                else:
                    code = main(argv[1:])
                    out = capsys.readouterr()
                    assert code in OK_CODES.get(key, (0,)), \
                        f"{line}\n-> exit {code}\n{out.out[-3000:]}\n{out.err[-3000:]}"
            ran.append((line, time.perf_counter() - t0))
        t0 = time.perf_counter()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(snippet, "README.md (Python snippet)", "exec"), {})  # noqa: S102 - the README's own code
        printed = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
        assert len(printed) == 2 and all("score_color" in ln and "'error': None" in ln for ln in printed), printed
        ran.append(("python snippet", time.perf_counter() - t0))
    finally:
        if server is not None:
            stop_serve(server[0])
    node.user_properties.append(("tour_seconds", {line[:100]: round(dt, 1) for line, dt in ran}))
    assert (folder / "results.jsonl").is_file() and (folder / "calibration.json").is_file()
    return [line for line, _ in ran]


def test_quick_tour_runs_as_written(tour_folder, capsys, request):
    ran = run_tour(tour_folder, slow=False, capsys=capsys, node=request.node)
    assert any(r.startswith("foclip detect") for r in ran) and ran[-1] == "python snippet"


@pytest.mark.slow
def test_whole_quick_tour_runs_as_written(tour_folder, capsys, request):
    ran = run_tour(tour_folder, slow=True, capsys=capsys, node=request.node)
    assert len(ran) == len(tour()[0]) + 1, ran


def start_serve(argv: list[str]) -> tuple[subprocess.Popen, int]:
    """Start the tour's `foclip serve` line on a free port (the one change to it); returns the process and the port."""
    import httpx

    from foclip.serve.service import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "foclip.cli.main", *argv, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"{' '.join(argv)} exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, "the tour's foclip serve to answer /healthz", 300, interval=0.3)
    return proc, port


def stop_serve(proc: subprocess.Popen) -> None:
    terminate(proc)


def run_curl(argv: list[str], port: int) -> None:
    """The tour's curl line against the tour's service (httpx sends the same form where curl is missing)."""
    import json

    argv = [w.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for w in argv]
    if shutil.which("curl"):
        out = subprocess.run([*argv, "--silent", "--show-error", "--max-time", str(ceiling(180))],
                             capture_output=True, text=True, check=True).stdout
        body = json.loads(out)
    else:
        import httpx

        files = [("file", (w.split("@", 1)[1], Path(w.split("@", 1)[1]).read_bytes()))
                 for w in argv if w.startswith("file=@")]
        body = httpx.post(argv[-1], files=files, timeout=ceiling(180)).json()
    assert [r["error"] for r in body["results"]] == [None, None], body


# --- every `foclip ...` line in the README and docs: its options exist (synopses) or it parses (examples)

def foclip_lines() -> list[tuple[str, str]]:
    """``[(file name, line), ...]`` for every line of a code block that starts with ``foclip ``."""
    found = []
    for path in [README, *DOCS]:
        for _lang, body in code_blocks(path.read_text(encoding="utf-8")):
            body = body.replace("\\\n", " ")  # shell continuation lines
            ours = False
            for ln in body.splitlines():
                if ln.startswith("foclip "):
                    found.append((path.name, ln.strip()))
                    ours = True
                elif ours and ln.startswith(" ") and ln.strip().startswith("["):  # a synopsis goes on
                    found[-1] = (path.name, f"{found[-1][1]} {ln.strip()}")
                else:
                    ours = False
    return found


def subparser(words: list[str]):
    parser = build_parser()
    for word in words:
        actions = [a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)]
        if not actions or word not in actions[0].choices:
            break
        parser = actions[0].choices[word]
    return parser


@pytest.mark.parametrize(("where", "line"), foclip_lines(), ids=lambda v: v if v.endswith(".md") else v[:60])
def test_documented_foclip_line_matches_the_cli(where, line):
    words = shlex.split(line.split("  #", 1)[0], comments=False)[1:]
    if any(w.endswith(":") for w in words[:3]):
        pytest.skip("printed output, not a command")
    synopsis = any(w.startswith("[") or w.endswith(("...", "]")) for w in words)
    if synopsis:  # `foclip detect BUNDLE INPUTS... [--backend ort-cpu] ...`: the command's options, all of them
        parser = subparser(words)
        known = {s for a in parser._actions for s in a.option_strings if s.startswith("--")} - {"--help", "--verbose"}
        named = {m for w in words for m in re.findall(r"--[a-z0-9][a-z0-9-]*", w)}
        command = f"foclip {' '.join(w for w in words[:2] if w.islower())}"
        assert named <= known, f"{where}: {sorted(named - known)} are not options of `{command}`"
        assert known <= named, f"{where}: the synopsis of `{command}` leaves out {sorted(known - named)}"
    else:
        try:
            parse(words)
        except SystemExit as exc:
            pytest.fail(f"{where}: `{line}` does not parse (exit {exc.code})")
