"""The README's Quick tour runs as written; every `foclip` line in README.md and docs/ parses.

The tour is read from README.md (the first code block under "## Quick tour" and the Python snippet
after it), not copied here, so a line that breaks fails this test. Each command runs in a fresh
folder, in process, with three substitutions that keep it offline and small, and nothing else:

* ``--model X`` becomes ``--model foclip-ref-vit`` and ``--pretrained Y`` becomes ``--pretrained
  reference`` (added where a command names a model but no weights): the reference CLIP shipped in
  the package, since laion2b weights cannot be downloaded here. On photos it scores low (it was
  trained on clip art): this checks mechanics, not detection quality.
* ``--prompts X`` becomes ``--prompts clipart`` (the reference model's vocabulary).
* :data:`SMALL` appends options that shrink a command (later options win in argparse): few
  iterations, few samples.

The inputs the tour assumes (``photos/``, ``incoming/``, ``a.jpg``, ``b.png``) are the sample photos
of :mod:`foclip.samples`. The default suite runs the offline part (generate, export, inspect,
calibrate, detect, the Python snippet; ~25-35 s of CPU); ``-m slow`` runs the whole tour, with the
service started and ``curl`` sent to it. ``foclip reference build`` is only parsed (it renders ~8,000
Debian clip-art images and trains for minutes; tests/train covers it).
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

SUBSTITUTE = {"--model": "foclip-ref-vit", "--pretrained": "reference", "--prompts": "clipart"}
# Per command: options appended to shrink it, and whether the default suite runs it (False: -m slow).
SMALL: dict[tuple[str, ...], tuple[list[str], bool]] = {
    ("generate",): (["--iters", "3", "--batch", "4"], True),
    ("export",): ([], True),
    ("inspect",): ([], True),
    ("calibrate",): ([], True),
    ("detect",): ([], True),
    ("serve",): (["--threads", "1"], False),
    ("bench", "generate"): (["--iters", "2", "--rounds", "1", "--batch", "2", "--no-native"], False),
    ("bench", "detect"): (["--samples", "4", "--repeat", "1", "--batch", "4"], False),
    ("reproduce",): (["--iters", "3", "--max-images", "4", "--extra-images", "2", "--folds", "2",
                      "--sections", "table1,table2,table3", "--no-figures"], False),
    ("reference", "build"): ([], False),
}
PARSE_ONLY = {("reference", "build")}
OK_CODES = {("detect",): (0, 3)}  # 3: something was flagged, as the README says


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``[(language, body), ...]`` of the fenced code blocks of a markdown text."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def tour() -> tuple[list[str], str]:
    """The Quick tour's shell lines (comments and blank lines dropped) and its Python snippet."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Quick tour", 1)[1].split("\n## ", 1)[0]
    blocks = code_blocks(section)
    shell = next(body for lang, body in blocks if lang == "")
    snippet = next(body for lang, body in blocks if lang == "python")
    lines = [ln.split("  #", 1)[0].strip() for ln in shell.splitlines()]
    return [ln for ln in lines if ln], snippet


def command_of(argv: list[str]) -> tuple[str, ...]:
    """``["bench", "detect", "b/"]`` -> ``("bench", "detect")``: the key of :data:`SMALL`."""
    two = tuple(argv[:2])
    return two if two in SMALL else tuple(argv[:1])


def offline_small(argv: list[str]) -> list[str]:
    """The tour's argv with the offline model, the clipart prompts and the small sizes."""
    out = list(argv)
    for i, word in enumerate(out[:-1]):
        if word in SUBSTITUTE:
            out[i + 1] = SUBSTITUTE[word]
    # `foclip reference ...` trains the model it names: it takes no weights
    if "--model" in out and "--pretrained" not in out and command_of(argv)[0] != "reference":
        out += ["--pretrained", SUBSTITUTE["--pretrained"]]
    return out + SMALL[command_of(argv)][0]


@pytest.fixture()
def tour_folder(tmp_path, monkeypatch):
    """A fresh folder holding what the tour assumes: photos/, incoming/, a.jpg and b.png."""
    from foclip.samples import sample_photos, short_name

    photos = sample_photos(8)
    (tmp_path / "photos").mkdir()
    (tmp_path / "incoming").mkdir()
    for i, (name, im) in enumerate(photos):
        folder = "photos" if i < 4 else "incoming"
        im.save(tmp_path / folder / f"{short_name(name)}.{'png' if i % 2 else 'jpg'}", quality=92)
    photos[0][1].save(tmp_path / "a.jpg", quality=92)
    photos[1][1].save(tmp_path / "b.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_tour_line_has_a_rule():
    """A new tour line must say here how to run it small, or this fails (and the tour would go unchecked)."""
    lines, snippet = tour()
    assert len(lines) >= 10 and "Detector.from_bundle" in snippet
    for line in lines:
        argv = shlex.split(line)
        if argv[0] == "curl":
            continue
        assert argv[0] == "foclip", line
        assert command_of(argv[1:]) in SMALL, f"no small-size rule for tour line: {line}"


def test_calibration_precision_matches_detection_in_the_tour():
    """Every tour line that uses the calibration (and the snippet) runs at the precision it was made at
    (issue 25: calibrate ran at fp32, detect at int8)."""
    lines, snippet = tour()

    def precision(line: str) -> str:  # fp32: the default of calibrate, detect and serve
        argv = shlex.split(line)
        return argv[argv.index("--precision") + 1] if "--precision" in argv else "fp32"

    cal = next(ln for ln in lines if ln.startswith("foclip calibrate"))
    users = [ln for ln in lines if "--calibration" in shlex.split(ln)]
    assert len(users) >= 2
    for line in users:
        assert precision(line) == precision(cal), line
    assert f'precision="{precision(cal)}"' in snippet


def run_tour(folder: Path, slow: bool, capsys) -> list[str]:
    """Run the tour's lines in order (the default suite's part, or all); returns what ran."""
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
                if not (SMALL[key][1] or slow):
                    continue
                small = offline_small(argv[1:])
                if key in PARSE_ONLY:
                    parse(small)
                elif key == ("serve",):
                    server = start_serve(small)
                else:
                    code = main(small)
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
    with capsys.disabled():  # how long each step of the small tour took (shown with -s)
        print("\n" + "\n".join(f"{dt:6.1f} s  {line[:100]}" for line, dt in ran))
    assert (folder / "results.jsonl").is_file() and (folder / "calibration.json").is_file()
    return [line for line, _ in ran]


def test_quick_tour_runs_as_written(tour_folder, capsys):
    ran = run_tour(tour_folder, slow=False, capsys=capsys)
    assert any(r.startswith("foclip detect") for r in ran) and ran[-1] == "python snippet"


@pytest.mark.slow
def test_whole_quick_tour_runs_as_written(tour_folder, capsys):
    ran = run_tour(tour_folder, slow=True, capsys=capsys)
    assert len(ran) == len(tour()[0]) + 1, ran


def start_serve(argv: list[str]) -> tuple[subprocess.Popen, int]:
    """Start the tour's `foclip serve` line on a free port; returns the process and the port."""
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
