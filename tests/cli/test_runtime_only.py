"""A runtime-only install (``pip install 'foclip[cpu]'``: neither torch nor open_clip) scores images,
serves, and says in one line which extra the torch-side commands need.

The fast tests hide torch and open_clip from a fresh interpreter (every import finder answers
"not found" for them, as on an install without them) and run the CLI there; the slow one really
installs ``.[cpu]`` into a fresh virtual environment and runs the installed ``foclip`` command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600 * float(os.environ.get("FOCLIP_TEST_TIMEOUT_SCALE", "1"))
EXTRA_HINT = "pip install 'foclip[export,cpu]'"
HIDDEN = ("torch", "torchvision", "open_clip", "open_clip_train", "ray")  # none of them in foclip[cpu]

# Wraps every finder so that the hidden packages are "not installed" (find_spec gives None, an import
# raises ModuleNotFoundError), and writes the names asked for to stderr at exit.
_HIDE = f"""
import atexit, sys
HIDDEN = {HIDDEN!r}
asked = set()
class Hide:
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            asked.add(name)
            return None
        find = getattr(self.inner, "find_spec", None)
        return find(name, path, target) if find else None
    def __getattr__(self, attr):
        return getattr(self.inner, attr)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
atexit.register(lambda: print("HIDDEN-ASKED:" + ",".join(sorted(asked)), file=sys.stderr))
from foclip.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _without_torch(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _HIDE, *argv], capture_output=True, text=True, env=_env(),
                          cwd=cwd, timeout=TIMEOUT, check=False)


def _asked(stderr: str) -> set[str]:
    line = [x for x in stderr.splitlines() if x.startswith("HIDDEN-ASKED:")][-1]
    return {n for n in line.removeprefix("HIDDEN-ASKED:").split(",") if n}


def _error_lines(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.strip() and not x.startswith("HIDDEN-ASKED:")]


def test_detect_scores_images_without_torch_or_open_clip(tiny_bundle, sample_photo_dir):
    out = _without_torch("detect", str(tiny_bundle), str(sample_photo_dir), "--format", "jsonl")
    assert out.returncode in (0, 3), out.stderr[-3000:]
    rows = [x for x in out.stdout.splitlines() if x.startswith("{")]
    assert len(rows) == 4 and all('"score_color"' in r and '"drop"' in r for r in rows)
    assert _asked(out.stderr) == set()  # the runtime never even looks for them


def test_serve_help_without_torch_or_open_clip():
    out = _without_torch("serve", "--help")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "usage: foclip serve" in out.stdout
    assert _asked(out.stderr) == set()


@pytest.mark.parametrize("command", [
    ["generate", "{photos}", "--out", "{tmp}/gen"],
    ["export", "--out", "{tmp}/bundle"],
    ["reproduce", "--out", "{tmp}/rep"],
    ["bench", "generate"],
    ["reference", "select"],
])
def test_torch_side_commands_fail_in_one_line_naming_the_extra(command, sample_photo_dir, tmp_path):
    argv = [a.format(photos=sample_photo_dir, tmp=tmp_path) for a in command]
    out = _without_torch(*argv, cwd=tmp_path)  # relative default outputs (reference_work/) would land here
    lines = _error_lines(out.stderr)
    assert out.returncode == 1, out.stderr[-3000:]
    name = " ".join(command[:2] if command[0] in ("bench", "reference") else command[:1])
    assert len(lines) == 1 and lines[0].startswith(f"error: foclip {name} |"), lines
    assert EXTRA_HINT in lines[0] and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())  # stopped before writing anything


def test_serve_without_ray_says_which_extra(tiny_bundle, tmp_path):
    out = _without_torch("serve", str(tiny_bundle), cwd=tmp_path)
    lines = _error_lines(out.stderr)
    assert out.returncode == 1, out.stderr[-3000:]
    assert lines == ["error: ray | is not installed. Expected `pip install 'foclip[serve]'`."]


@pytest.mark.slow
def test_pip_install_cpu_extra_in_a_fresh_venv_runs_detect_and_serve(tiny_bundle, sample_photo_dir, tmp_path):
    """``pip install '.[cpu]'`` into a fresh venv (no system site-packages), then the installed command."""
    src = tmp_path / "src"  # a copy: an in-tree build would leave build/ (and stale modules) in the checkout
    for name in ("foclip", "foclip_train"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    pip = subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", f"{src}[cpu]"],
                         capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert pip.returncode == 0, pip.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", COLUMNS="200")
    py = str(bindir / "python")
    code = "import importlib.util as u; print([m for m in ('torch', 'open_clip', 'onnxruntime', 'foclip') if u.find_spec(m)])"
    probe = subprocess.run([py, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT, check=True)
    assert probe.stdout.strip() == "['onnxruntime', 'foclip']"
    foclip = str(bindir / "foclip")
    det = subprocess.run([foclip, "detect", str(tiny_bundle), str(sample_photo_dir), "--format", "jsonl"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT, check=False)
    assert det.returncode in (0, 3), det.stderr[-3000:]
    assert sum(1 for x in det.stdout.splitlines() if '"score_color"' in x) == 4
    serve = subprocess.run([foclip, "serve", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=TIMEOUT, check=False)
    assert serve.returncode == 0 and "usage: foclip serve" in serve.stdout, serve.stderr[-3000:]
    gen = subprocess.run([foclip, "generate", str(sample_photo_dir), "--out", str(tmp_path / "gen")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT, check=False)
    lines = [x for x in gen.stderr.splitlines() if x.strip()]
    assert gen.returncode == 1 and len(lines) == 1 and EXTRA_HINT in lines[0], gen.stderr[-3000:]
    served = subprocess.run([foclip, "serve", str(tiny_bundle)], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=TIMEOUT, check=False)
    lines = [x for x in served.stderr.splitlines() if x.strip()]
    assert served.returncode == 1 and len(lines) == 1 and "foclip[serve]" in lines[0], served.stderr[-3000:]
