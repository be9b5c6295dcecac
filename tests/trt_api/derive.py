#!/usr/bin/env python3
"""Derive the TensorRT API surfaces the tests hold foclip and its TensorRT double to.

Sources (downloaded by hand, never stored here; see docs/export.md, "TensorRT versions"):

* **10.x**: ``pip download --no-deps tensorrt-stubs==10.13.0.35.1``: type stubs generated from the
  real 10.13 bindings (``tensorrt_bindings/tensorrt.pyi`` and ``tensorrt_bindings/__init__.pyi``).
* **11.x**: ``pip download --no-deps 'tensorrt-cu12-bindings==11.*'`` (11.4.0.106): the compiled
  ``tensorrt_bindings/tensorrt.so`` cannot be imported without the libs wheel, so a 10.13 name is
  kept when the .so's strings hold it (pybind11 registers every class, method and enum member
  name as a C string; the linker may merge a name into the tail of a longer one, so a tail match
  on identifier-shaped strings counts) and NVIDIA's "Removed Python APIs and Replacements" page of
  the 10.x -> 11.x migration guide does not list it (:data:`REMOVED_IN_11`: needed because a name
  such as ``BF16`` survives as ``DataType.BF16`` while ``BuilderFlag.BF16`` is gone).
  ``nptype`` and ``__version__`` live in the wheel's pure-Python ``__init__.py``.

Only the classes foclip's TensorRT code and the double touch are kept (:data:`CLASSES`), each with
all its members, so a surface file is small and a diff between versions is readable. Run::

    python tests/trt_api/derive.py STUBS_WHEEL BINDINGS_11_WHEEL [BINDINGS_10_WHEEL]

It writes ``tests/trt_api/<version>/tensorrt/__init__.pyi`` (the trimmed stub mypy checks foclip
against) and ``tests/trt_api/surface-<version>.txt`` (one qualified name a line: what the double
may offer on that surface). A third wheel (10.16 bindings) is only cross-checked: every 10.13 name
kept must be in its strings too.
"""

from __future__ import annotations

import ast
import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLASSES = ("ILogger", "Logger", "Builder", "BuilderFlag", "NetworkDefinitionCreationFlag", "INetworkDefinition",
           "OnnxParser", "ParserError", "IBuilderConfig", "MemoryPoolType", "IOptimizationProfile", "ITimingCache",
           "IHostMemory", "Runtime", "ICudaEngine", "IExecutionContext", "TensorIOMode", "DataType", "Dims")
FUNCTIONS = ("nptype",)
# NVIDIA, "Migrating from TensorRT 10.x to 11.x", Python API reference, "Removed Python APIs and
# Replacements" (TensorRT 11.4.0 docs), restricted to the classes above.
REMOVED_IN_11 = frozenset({
    "BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.FP8", "BuilderFlag.BF16", "BuilderFlag.INT4",
    "BuilderFlag.FP4", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS",
    "BuilderFlag.DIRECT_IO", "IBuilderConfig.int8_calibrator", "IBuilderConfig.set_calibration_profile",
    "IBuilderConfig.get_calibration_profile", "IBuilderConfig.set_quantization_flag",
    "IBuilderConfig.get_quantization_flag", "IBuilderConfig.quantization_flags",
    "IBuilderConfig.clear_quantization_flag", "IBuilderConfig.algorithm_selector",
    "ICudaEngine.device_memory_size", "ICudaEngine.device_memory_size_v2",
    "ICudaEngine.get_device_memory_size_for_profile", "Builder.platform_has_fast_fp16",
    "Builder.platform_has_fast_int8",
})
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _member_name(node: ast.stmt) -> str | None:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None


def _wheel_text(wheel: Path, member: str) -> str:
    with zipfile.ZipFile(wheel) as z:
        return z.read(member).decode("utf-8")


def _wheel_strings(wheel: Path) -> set[str]:
    """Identifier-shaped printable runs of the compiled module (what ``strings`` prints)."""
    with zipfile.ZipFile(wheel) as z:
        data = z.read("tensorrt_bindings/tensorrt.so")
    return {s.decode() for s in re.findall(rb"[\x20-\x7e]{2,}", data) if IDENT.match(s.decode())}


def _in_strings(name: str, strings: set[str]) -> bool:
    return name in strings or any(s.endswith(name) for s in strings)


def _py_names(wheel: Path) -> set[str]:
    tree = ast.parse(_wheel_text(wheel, "tensorrt_bindings/__init__.py"))
    return {n for node in tree.body if (n := _member_name(node))}


def parseable(stub: str) -> str:
    """The stub with each signature Python cannot parse (stubgen writes a few with a required
    argument after a defaulted one) loosened to ``(self, *args, **kwargs)``, its return kept."""
    lines = stub.splitlines()
    while True:
        try:
            ast.parse("\n".join(lines))
            return "\n".join(lines)
        except SyntaxError as exc:
            i = (exc.lineno or 1) - 1
            m = re.match(r"^(\s*)def (\w+)\(.*\)( -> .*)?:\s*$", lines[i])
            if not m:
                raise
            lines[i] = f"{m.group(1)}def {m.group(2)}(self, *args: typing.Any, **kwargs: typing.Any){m.group(3) or ''}:"


def _strip_docs(node: ast.AST) -> None:
    """Drop docstrings (an empty body becomes ``...``): the surface is the names and signatures."""
    for child in ast.walk(node):
        body = getattr(child, "body", None)
        if isinstance(child, (ast.ClassDef, ast.FunctionDef)) and body:
            body[:] = [b for b in body if not (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant))] or [
                ast.Expr(ast.Constant(...))]


def trimmed_stub(stub: str, keep: dict[str, set[str] | None], version: str) -> str:
    """The stub's selected classes (members filtered by ``keep``) and functions, as one .pyi."""
    tree = ast.parse(parseable(stub))
    classes, used = [], set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in keep:
            allowed = keep[node.name]
            node.body = [m for m in node.body if _member_name(m) != "__members__" and (
                allowed is None or _member_name(m) is None or (_member_name(m) or "").startswith("__")
                or _member_name(m) in allowed)]
            _strip_docs(node)
            classes.append(node)
            used |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    defined = {c.name for c in classes} | {"Severity"}
    missing = sorted(n for n in used if n not in defined and n[0].isupper() and n not in dir(__builtins__))
    out = ["# Generated by tests/trt_api/derive.py from tensorrt-stubs 10.13.0.35.1 (MIT, sync.dev), trimmed to",
           f"# the classes foclip uses; the surface of TensorRT {version}. Do not edit by hand.",
           "from __future__ import annotations", "import typing", "import typing_extensions", "import numpy", ""]
    out += [f"{n}: typing.TypeAlias = typing.Any  # outside foclip's surface" for n in missing] + [""]
    out += [ast.unparse(c) + "\n" for c in classes]
    out += ["def nptype(trt_type: DataType) -> type: ...", f"__version__: str = {version!r}"]
    return "\n".join(out) + "\n"


def names(pyi: str) -> list[str]:
    """Qualified names a trimmed stub offers (``Class.member``; dunders left out)."""
    tree = ast.parse(pyi)
    found = []
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            found.append(node.name)
            inherited = [m for b in node.bases if isinstance(b, ast.Name) and b.id in classes
                         for m in classes[b.id].body]  # Logger(ILogger): Logger.WARNING is ILogger's
            for m in [*node.body, *inherited]:
                n = _member_name(m)
                if n and not n.startswith("__"):
                    found.append(f"{node.name}.{n}")
                if isinstance(m, ast.ClassDef):
                    found += [f"{node.name}.{m.name}.{_member_name(x)}" for x in m.body
                              if _member_name(x) and not _member_name(x).startswith("__")]
        elif isinstance(node, ast.FunctionDef) or (isinstance(node, ast.AnnAssign) and "TypeAlias" not in ast.unparse(node)):
            found.append(_member_name(node))
    return sorted(set(found))


def main(argv: list[str]) -> int:
    stubs_whl, b11_whl = Path(argv[0]), Path(argv[1])
    b10_whl = Path(argv[2]) if len(argv) > 2 else None
    stub = _wheel_text(stubs_whl, "tensorrt_bindings/tensorrt.pyi")
    v10 = trimmed_stub(stub, {c: None for c in CLASSES}, "10.13.0.35")
    n10 = names(v10)
    s11, py11 = _wheel_strings(b11_whl), _py_names(b11_whl)
    s11 |= {m for m in re.findall(r"\.(\w+) = ", _wheel_text(b11_whl, "tensorrt_bindings/__init__.py"))}
    keep11: dict[str, set[str] | None] = {c: set() for c in CLASSES}
    for q in n10:
        if "." not in q:
            continue
        cls, _, member = q.partition(".")
        leaf = q.rsplit(".", 1)[-1]
        if cls in keep11 and q not in REMOVED_IN_11 and _in_strings(leaf, s11):
            keep11[cls].add(member.split(".")[0])  # type: ignore[union-attr]
    v11 = trimmed_stub(stub, keep11, "11.4.0.106")
    assert "nptype" in py11 and "__version__" in py11
    n11 = names(v11)
    if b10_whl is not None:
        s10 = _wheel_strings(b10_whl) | set(re.findall(r"\.(\w+) = ", _wheel_text(b10_whl, "tensorrt_bindings/__init__.py")))
        lost = [q for q in n10 if "." in q and not _in_strings(q.rsplit(".", 1)[-1], s10)]
        print(f"10.16 bindings lack {len(lost)} of the 10.13 names: {lost}")
    for version, pyi, listed in (("10.13", v10, n10), ("11.4", v11, n11)):
        folder = HERE / version / "tensorrt"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.pyi").write_text(pyi)
        (HERE / f"surface-{version}.txt").write_text("\n".join(listed) + "\n")
        print(f"{version}: {len(listed)} names")
    print("only in 10.13:", sorted(set(n10) - set(n11)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
