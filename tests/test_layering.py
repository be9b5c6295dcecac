"""The library stays below the screen: nothing outside foclip/cli imports foclip.cli or rich, and
importing every module in a fresh interpreter shows no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from waits import ceiling

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("foclip", "foclip_train")


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_library_module_imports_the_cli_or_rich():
    offenders = []
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("foclip/cli/"):
            continue
        bad = {n for n in _imports(path) if n == "rich" or n.startswith(("rich.", "foclip.cli"))}
        if bad:
            offenders.append(f"{rel}: {sorted(bad)}")
    assert offenders == []


def test_every_module_imports_alone_without_a_cycle():
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in _modules()]
    # each in its own interpreter: a cycle shows up as an ImportError for the module imported first
    code = ("import importlib, sys\n"
            "bad = []\n"
            "for name in sys.argv[1:]:\n"
            "    for m in [k for k in sys.modules if k.startswith(('foclip', 'foclip_train'))]:\n"
            "        del sys.modules[m]\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ImportError as exc:\n"
            "        if 'circular' in str(exc) or 'partially initialized' in str(exc):\n"
            "            bad.append(f'{name}: {exc}')\n"
            "print('\\n'.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=ROOT, timeout=ceiling(600), check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""
