"""The layers of the code base only import downwards, and every module imports on its own.

Layers, from the bottom: ``foclip.runtime`` (numpy, PIL, ONNX Runtime; never torch, open_clip or matplotlib;
its ``stats`` imports only numpy and ``foclip.errors``), ``foclip.plots`` (matplotlib),
``foclip.models`` / ``foclip.exporter`` (torch), ``foclip.serve``, ``foclip_train``, ``foclip.cli``.
Two checks:

* static: every import statement of every module, function-local ones included, read with ``ast``;
* dynamic: each module imported on its own in a fresh interpreter (one forked child per module of
  one parent that has imported only the heavy third-party libraries, so that torch is loaded once),
  which shows import cycles and records every import statement that ran and the foclip modules loaded.

A module that cannot be imported because an optional dependency is not installed here is reported
(a warning naming the module and the missing package), not skipped silently; any other import
error fails.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from waits import ceiling

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("foclip", "foclip_train")
TIMEOUT = ceiling(900)
# (importer prefix, imported prefixes it must never reach)
RULES = (
    ("foclip.runtime", ("foclip.exporter", "foclip.models", "foclip.serve", "foclip.cli", "foclip_train",
                        "torch", "open_clip", "matplotlib", "foclip.plots")),
    ("foclip.exporter", ("foclip.serve", "foclip.cli")),
)
# Loaded once by the parent before it forks: imported by many modules, slow to import (torch alone
# takes seconds), and no foclip code runs while they load.
PRELOAD = ("numpy", "PIL.Image", "onnxruntime", "onnx", "torch", "torchvision", "open_clip", "ray", "ray.serve",
           "rich.console", "tokenizers", "huggingface_hub", "safetensors")


def _module_names() -> list[str]:
    paths = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    return [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in paths]


def _path(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def forbidden(importer: str, imported: str) -> bool:
    """Whether ``importer`` (a module name) may not import ``imported`` (a module name)."""
    if _under(imported, "foclip.cli") or imported == "rich" or imported.startswith("rich."):
        return not _under(importer, "foclip.cli")  # nothing below the screen imports the CLI or rich
    return any(_under(importer, low) and any(_under(imported, high) for high in highs) for low, highs in RULES)


def static_imports(module: str) -> set[str]:
    """Every module named by an import statement anywhere in ``module`` (relative ones resolved)."""
    package = module if _path(module).name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(_path(module).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level else (
                node.module or "")
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if a.name != "*")  # `from pkg import submodule`
    return names


def test_the_rules_say_what_they_mean():
    assert forbidden("foclip.runtime.detector", "torch")
    assert forbidden("foclip.runtime", "foclip_train.generate")
    assert forbidden("foclip.exporter.bundle", "foclip.serve.core")
    assert forbidden("foclip.serve.core", "foclip.cli.common")
    assert forbidden("foclip_train.generate", "rich.progress")
    assert not forbidden("foclip.cli.detect", "foclip.cli.common")
    assert not forbidden("foclip.exporter.bundle", "foclip.runtime.bundle")
    assert not forbidden("foclip.runtimex", "torch")  # a prefix is a whole module name
    assert forbidden("foclip.runtime.calibration", "matplotlib.pyplot")  # plots are foclip.plots, the plots extra
    assert not forbidden("foclip.plots", "matplotlib.pyplot")
    assert not forbidden("foclip.runtime.calibration", "foclip.runtime.stats")


def test_the_statistics_import_only_numpy():
    # foclip.runtime.calibration and foclip_train both build on them, so they sit under both (a
    # static check: importing foclip.runtime.stats runs foclip/runtime/__init__.py, which loads the rest)
    names = static_imports("foclip.runtime.stats")
    assert "numpy" in names
    assert sorted(n for n in names if n.partition(".")[0] not in ("__future__", "math", "typing", "numpy")) == [
        "foclip.errors", "foclip.errors.InputError"]


def test_no_import_statement_runs_up_the_layers():
    offenders = []
    for module in _module_names():
        bad = sorted(n for n in static_imports(module) if forbidden(module, n))
        if bad:
            offenders.append(f"{module}: {bad}")
    assert offenders == []


# The parent: preload, then for each module fork a child that imports only it and answers one JSON line.
_FORK_SERVER = r"""
import builtins, importlib, importlib.util, json, os, sys, traceback

for name in json.loads(sys.argv[1]):
    try:
        if importlib.util.find_spec(name.partition(".")[0]) is not None:
            importlib.import_module(name)
    except Exception:
        pass  # the child that needs it reports the failure
assert not [m for m in sys.modules if m.partition(".")[0] in ("foclip", "foclip_train")], "preload loaded foclip"


def child(module):
    edges = set()
    real_import = builtins.__import__

    def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {}).get("__name__", "")
        if importer.partition(".")[0] in ("foclip", "foclip_train"):
            try:
                target = importlib.util.resolve_name("." * level + name, globals.get("__package__") or importer) \
                    if level else name
            except (ImportError, ValueError):
                target = name
            edges.add((importer, target))
            for item in fromlist or ():
                if item != "*":
                    edges.add((importer, f"{target}.{item}"))
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = recording_import
    result = {"module": module, "status": "ok"}
    try:
        importlib.import_module(module)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        # ModuleNotFoundError names the module; foclip's MissingExtraError names it as its subject
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else (
            getattr(exc, "subject", None) if exc.__class__.__name__ == "MissingExtraError" else None)
        if "circular" in msg or "partially initialized" in msg:
            result.update(status="cycle", error=msg)
        elif missing and missing.partition(".")[0] not in ("foclip", "foclip_train") and \
                importlib.util.find_spec(missing.partition(".")[0]) is None:
            result.update(status="missing", dependency=missing)
        else:
            result.update(status="error", error="".join(traceback.format_exception_only(exc)).strip()[-500:])
    finally:
        builtins.__import__ = real_import
    result["edges"] = sorted(edges)
    result["loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] in ("foclip", "foclip_train"))
    return result


for module in sys.argv[2:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            data = json.dumps(child(module)).encode()
        except BaseException as exc:
            data = json.dumps({"module": module, "status": "error", "error": repr(exc)}).encode()
        with os.fdopen(write, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    print(data.decode() if data else json.dumps({"module": module, "status": "error",
                                                 "error": f"child died (wait status {status})"}), flush=True)
"""


def missing_report(rows: dict[str, dict]) -> str:
    """One line naming each module that could not be imported for a missing optional dependency."""
    missing = {m: r["dependency"] for m, r in sorted(rows.items()) if r["status"] == "missing"}
    if not missing:
        return ""
    return "not imported here, optional dependency missing: " + ", ".join(f"{m} (needs {d})" for m, d in missing.items())


def _run_fork_server(modules: list[str], preload: tuple[str, ...], prelude: str = "") -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", prelude + _FORK_SERVER, json.dumps(preload), *modules],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=TIMEOUT, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {r["module"]: r for r in rows}


@pytest.fixture(scope="module")
def imported_alone() -> dict[str, dict]:
    """Each module imported on its own: status, the import statements that ran, the foclip modules loaded."""
    if not hasattr(os, "fork"):
        pytest.fail("the layering test forks one child per module (POSIX only)")
    return _run_fork_server(_module_names(), PRELOAD)


def test_every_module_imports_alone_without_a_cycle(imported_alone):
    assert sorted(imported_alone) == _module_names()
    broken = {m: r.get("error") for m, r in imported_alone.items() if r["status"] in ("cycle", "error")}
    assert broken == {}
    missing = missing_report(imported_alone)
    if missing:  # reported, not skipped: the module is unchecked here, and says why
        warnings.warn(missing, stacklevel=1)


def test_no_import_that_ran_goes_up_the_layers(imported_alone):
    offenders = set()
    for module, r in imported_alone.items():
        offenders.update(f"{a} -> {b} (importing {module})" for a, b in r["edges"] if forbidden(a, b))
        offenders.update(f"{module} loaded {m}" for m in r["loaded"] if forbidden(module, m))
    assert sorted(offenders) == []


def test_the_records_are_not_empty(imported_alone):
    # the checks above are only as good as what they read: known downward imports must show up
    assert "foclip.runtime.backends" in static_imports("foclip.runtime.detector")
    assert "foclip.errors" in static_imports("foclip.runtime.backends")
    detector = imported_alone["foclip.runtime.detector"]
    assert any(a == "foclip.runtime.detector" and b.startswith("foclip.runtime.") for a, b in detector["edges"])
    assert "foclip.runtime.backends" in detector["loaded"]


# Makes torch and open_clip "not installed" for the interpreter (every finder answers not found).
_HIDE_TORCH = """
import sys
class _Hide:
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "torchvision", "open_clip"):
            return None
        find = getattr(self.inner, "find_spec", None)
        return find(name, path, target) if find else None
    def __getattr__(self, attr):
        return getattr(self.inner, attr)
sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
"""


def test_a_missing_optional_dependency_is_reported_not_skipped():
    rows = _run_fork_server(["foclip.models", "foclip_train.attack", "foclip.runtime.detector"], (), _HIDE_TORCH)
    assert {m: (r["status"], r.get("dependency")) for m, r in rows.items()} == {
        "foclip.models": ("missing", "torch"),  # foclip.errors.require -> MissingExtraError
        "foclip_train.attack": ("missing", "torch"),  # a plain ModuleNotFoundError
        "foclip.runtime.detector": ("ok", None),
    }
    report = missing_report(rows)
    assert "foclip.models (needs torch)" in report and "foclip_train.attack (needs torch)" in report


def _module_graph() -> dict[str, set[str]]:
    """Module -> the foclip/foclip_train modules its import statements name (function-local ones
    included), plus the command modules the CLI's registry imports by name."""
    root = Path(__file__).resolve().parents[1]
    files = {}
    for package in ("foclip", "foclip_train"):
        for path in (root / package).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            files[name] = path

    def owner(dotted: str) -> str:
        while dotted and dotted not in files:
            dotted = dotted.rpartition(".")[0]
        return dotted

    graph = {}
    for name, path in files.items():
        named = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                named.update(owner(f"{node.module}.{a.name}") for a in node.names)
            elif isinstance(node, ast.Import):
                named.update(owner(a.name) for a in node.names)
        graph[name] = named - {"", name}
    from foclip.cli.main import COMMANDS

    graph["foclip.cli.main"] |= {f"foclip.cli.{module}" for _, module in COMMANDS}
    return graph


def test_no_two_modules_import_each_other():
    graph = _module_graph()
    assert len(graph) > 100 and "foclip.cli.demo" in graph["foclip.cli.main"]
    pairs = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if a in graph.get(b, ())})
    assert pairs == []
