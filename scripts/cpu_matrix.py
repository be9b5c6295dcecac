#!/usr/bin/env python3
"""Emulated CPU matrix: the self-check of every shipped precision on CPUs this machine is not.

Debian's ``qemu-user`` runs a Linux x86-64 program under an emulated CPU model whose CPUID reports
only that model's features, so ONNX Runtime (MLAS) and numpy pick that CPU's kernels. This script
runs, natively and under ``qemu-x86_64 -cpu MODEL`` for each model (default Haswell: AVX2 + FMA, no
AVX-512, no VNNI; Nehalem: SSE4.2 only):

* the self-check (``foclip.runtime.selfcheck``) of a reference-ViT bundle for fp32, fp16 and int8
  made with each ``--int8-method``;
* the control: ``dynamic-s8`` (full-range 8-bit weights) on ``foclip-sat-vit`` (random weights,
  12 layers, width 384, 64 px), which must be **refused** wherever the u8 x s8 kernel adds pairs of
  products in saturating int16 lanes (AVX2 without VNNI). A control that passes there means the
  emulator no longer reproduces the saturation, and the matrix fails;
* one end-to-end ``foclip detect --precision int8`` of a few sample photos, compared with the
  native run (same decisions, max |Δscore| and |Δdrop|).

It prints a table (method x CPU: min cosine, pass/fail, the kernel family MLAS dispatches for that
CPU's CPUID, the CPU flags the program saw, the host's flags), writes JSON (``--json``) and a
Markdown table (``--markdown``), and exits 1 when a shipped default misses its gate on a CPU, a
detection decision differs, or the control passes. ``--bundle B`` (repeatable) checks any bundle
instead. Emulation proves results, not speed: emulated timings are not reported.

Usage: ``python scripts/cpu_matrix.py [--work DIR] [--json OUT] [--markdown OUT] [--cpus Haswell,Nehalem]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CPU_MODELS = ("Haswell", "Nehalem")
REF_MODEL = "foclip-ref-vit"
CONTROL_MODEL = "foclip-sat-vit"
CONTROL_METHOD = "dynamic-s8"
DEFAULT_METHOD = "dynamic-u8s7"
# The int8 methods `foclip export --int8-method` ships (foclip/exporter/convert.py INT8_METHODS);
# a test keeps the two lists equal.
INT8_METHODS = ("dynamic-u8s7", "dynamic-s8", "dynamic-u8u8", "static-qdq")
VNNI_ONLY = ("dynamic-s8",)  # documented "for CPUs with VNNI only"
DETECT_PHOTOS = 6
# numpy's CPUID feature names -> /proc/cpuinfo's, for the flags the int8/fp32 kernels depend on.
NUMPY_FLAGS = {"SSE41": "sse4_1", "SSE42": "sse4_2", "AVX": "avx", "F16C": "f16c", "FMA3": "fma",
               "AVX2": "avx2", "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512DQ": "avx512dq",
               "AVX512VL": "avx512vl", "AVX512VNNI": "avx512_vnni"}
# Flags numpy does not report; read from /proc/cpuinfo for native runs only (under qemu-user that
# file is the host's, not the emulated CPU's).
PROC_ONLY_FLAGS = ("avx_vnni", "amx_tile", "amx_int8")
SHOWN_FLAGS = ("sse4_2", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
QEMU_NOISE = "warning: TCG doesn't support requested feature"


# ----------------------------------------------------------------------------- pure logic (tested)

def u8s8_kernel(flags: set[str]) -> str:
    """The u8 x s8 QGEMM kernel family ONNX Runtime's MLAS picks for these CPUID flags.

    Follows MLAS ``platform.cpp`` (x86-64, Linux): SSE2 baseline (operands widened to int16,
    ``pmaddwd``: exact), then AVX2, AVX-VNNI, AVX-512 core, AVX-512 VNNI, AMX, each overriding the
    last. AVX2 and AVX-512 core use ``vpmaddubsw``, which adds pairs of u8 x s8 products in
    saturating int16 lanes.

    Args:
        flags: /proc/cpuinfo-style flag names the program saw.

    Returns:
        A short kernel name, e.g. ``AVX2 (vpmaddubsw, int16 pairs saturate)``.
    """
    if "avx2" not in flags or "fma" not in flags:
        return "SSE2 (int16 widening, exact)"
    if {"amx_tile", "amx_int8"} <= flags:
        return "AMX"
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "AVX512-VNNI" if "avx512_vnni" in flags else "AVX512core (vpmaddubsw, int16 pairs saturate)"
    if "avx_vnni" in flags:
        return "AVX-VNNI"
    return "AVX2 (vpmaddubsw, int16 pairs saturate)"


def saturates(flags: set[str]) -> bool:
    """Whether full-range (8-bit) int8 weights can saturate the u8 x s8 kernel of this CPU."""
    return "saturate" in u8s8_kernel(flags)


def kernel(method: str, flags: set[str]) -> str:
    """The MLAS kernel family that runs a graph's matrix products on a CPU with these flags (inferred
    from CPUID the way MLAS dispatches, not observed).

    Args:
        method: ``fp32``, ``fp16`` or an int8 method name.
        flags: /proc/cpuinfo-style flag names the program saw.

    Returns:
        e.g. ``SGEMM FMA3`` or ``QGEMM u8s8 AVX2 (vpmaddubsw, int16 pairs saturate)``.
    """
    sgemm = ("AVX512F" if "avx512f" in flags else "FMA3" if {"avx2", "fma"} <= flags
             else "AVX" if "avx" in flags else "SSE")
    if method == "fp32":
        return f"SGEMM {sgemm}"
    if method == "fp16":
        return f"SGEMM {sgemm} (fp16 ops the CPU provider lacks run in fp32 behind Casts)"
    if method == "dynamic-u8u8":
        fam = ("AVX512core" if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
               else "AVX2 (int16, exact)" if {"avx2", "fma"} <= flags else "SSE2 (int16 widening, exact)")
        return f"QGEMM u8u8 {fam}"
    return f"QGEMM u8s8 {u8s8_kernel(flags)}"


def expectation(case: str, method: str, flags: set[str]) -> str:
    """What a row must show: ``pass`` (a shipped default within its gate), ``refuse`` (the control,
    where the kernel saturates) or ``info`` (reported, not judged).

    Args:
        case: ``reference`` or ``control``.
        method: ``fp32``, ``fp16`` or an int8 method name.
        flags: the CPU flags the program saw.

    Returns:
        ``pass``, ``refuse`` or ``info``.
    """
    if case == "control":
        return "refuse" if saturates(flags) else "info"
    if method in VNNI_ONLY and saturates(flags):
        return "info"  # documented for VNNI CPUs only
    return "pass"


@dataclass
class Row:
    """One self-check (or a skipped one) of one graph on one CPU."""

    case: str            # reference | control
    method: str          # fp32 | fp16 | an int8 method
    graph: str           # image.fp32, text.fp16, ...
    cpu: str             # native | a qemu CPU model
    flags: list[str] = field(default_factory=list)   # CPU flags the program saw (SHOWN_FLAGS subset)
    min_cosine: float | None = None
    gate: float | None = None
    passed: bool | None = None
    kernel: str = ""
    expect: str = "pass"
    note: str = ""       # why a row did not run, or the error it ran into
    refused_at_export: bool = False


def verdict(row: Row) -> tuple[bool, str]:
    """Whether a row is as expected, and a short word for the table.

    Returns:
        ``(ok, word)``: a shipped default that misses its gate or errors, or a control that passes or
        does not run (except when the export itself refused it), is not ok.
    """
    ran = row.passed is not None
    if row.expect == "refuse":
        if row.refused_at_export:
            return True, "REFUSED at export (as expected)"
        if not ran:
            return False, "FAIL: control did not run"
        return (True, "REFUSED (as expected)") if not row.passed else (
            False, "FAIL: control passed (saturation not reproduced)")
    if not ran:  # a CPU the wheels cannot run on is skipped with its reason; an error is a failure
        skipped = row.note.startswith("skipped")
        return skipped or row.expect == "info", "skipped" if skipped else "ERROR"
    word = "pass" if row.passed else "below gate"
    if row.expect == "info":
        return True, word + " (not judged)"
    return bool(row.passed), word if row.passed else "FAIL: below gate"


def compare_detect(native: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Compare two ``foclip detect --format jsonl`` runs of the same images.

    Args:
        native: result dicts of the native run.
        other: result dicts of the emulated run.

    Returns:
        images, flagged (native), same_decisions (same ids, same ``tampered``, same errors),
        max_abs_dscore (over score_color and score_gray, 0..score_scale) and max_abs_ddrop.
    """
    a = {r["id"]: r for r in native}
    b = {r["id"]: r for r in other}
    same = set(a) == set(b) and all(a[k].get("tampered") == b[k].get("tampered")
                                    and bool(a[k].get("error")) == bool(b[k].get("error")) for k in a)
    ds = dd = 0.0
    for k in set(a) & set(b):
        for f in ("score_color", "score_gray"):
            if a[k].get(f) is not None and b[k].get(f) is not None:
                ds = max(ds, abs(a[k][f] - b[k][f]))
        if a[k].get("drop") is not None and b[k].get("drop") is not None:
            dd = max(dd, abs(a[k]["drop"] - b[k]["drop"]))
    return {"images": len(a), "flagged": sum(bool(r.get("tampered")) for r in native), "same_decisions": same,
            "max_abs_dscore": ds, "max_abs_ddrop": dd}


def matrix_ok(rows: list[Row], detects: list[dict[str, Any]], need_control: bool = True) -> tuple[bool, list[str]]:
    """The matrix's verdict and one line per problem.

    Args:
        rows: every self-check row.
        detects: the end-to-end detect comparisons (each with ``cpu`` and, when it ran,
            ``same_decisions``; ``note`` when it did not).
        need_control: require a control row that is expected to be refused (off for ``--bundle``).

    Returns:
        ``(ok, problems)``. A matrix without a control row that was refused is never ok.
    """
    problems = []
    for r in rows:
        ok, word = verdict(r)
        if not ok:
            problems.append(f"{r.case} {r.method} {r.graph} on {r.cpu}: {word}"
                            + (f" ({r.note})" if r.note else ""))
    if need_control and not any(r.case == "control" and r.expect == "refuse" for r in rows):
        problems.append("control: no CPU in the matrix saturates, so nothing showed that a bad graph is refused")
    for d in detects:
        if d.get("note", "").startswith("skipped"):
            continue
        if not d.get("same_decisions"):
            problems.append(f"detect on {d['cpu']}: decisions differ from the native run"
                            + (f" ({d['note']})" if d.get("note") else ""))
    return not problems, problems


def flag_list(flags: set[str]) -> list[str]:
    """The flags worth showing, in a fixed order."""
    return [f for f in SHOWN_FLAGS if f in flags]


def markdown(rows: list[Row], detects: list[dict[str, Any]], host_flags: list[str]) -> str:
    """The matrix as Markdown tables (self-checks, then end-to-end detect).

    Args:
        rows: the self-check rows.
        detects: the detect comparisons.
        host_flags: the host's int8-relevant CPU flags (shown in every row).

    Returns:
        Markdown text.
    """
    host = " ".join(host_flags) or "-"
    out = [("| case | method | graph | CPU | CPU flags seen by the program | host CPU flags | min cosine | gate | "
            "result | kernel (inferred from CPUID) |"),
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cos = "-" if r.min_cosine is None else f"{r.min_cosine:.6f}"
        cpu = "native" if r.cpu == "native" else f"emulated {r.cpu}"
        out.append(f"| {r.case} | {r.method} | {r.graph} | {cpu} | {' '.join(r.flags) or '-'} | {host} | {cos} | "
                   f"{'' if r.gate is None else r.gate} | {verdict(r)[1]} | {r.kernel} |")
    if detects:
        out += ["", ("| foclip detect --precision int8 | CPU | images | flagged (native) | same decisions | "
                     "max \\|Δscore\\| (0..100) | max \\|Δdrop\\| |"), "|---|---|---|---|---|---|---|"]
        for d in detects:
            if "same_decisions" in d:
                out.append(f"| {d['bundle']} | emulated {d['cpu']} | {d['images']} | {d['flagged']} | "
                           f"{'yes' if d['same_decisions'] else 'NO'} | {d['max_abs_dscore']:.2e} | "
                           f"{d['max_abs_ddrop']:.2e} |")
            else:
                out.append(f"| {d['bundle']} | emulated {d['cpu']} | | | {d.get('note', '')} | | |")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- probe (runs under qemu)

def cpu_flags(native: bool) -> set[str]:
    """The CPU flags this process sees: numpy's CPUID reading, plus /proc/cpuinfo's VNNI/AMX flags
    when not emulated.

    Args:
        native: not under qemu (only then does /proc/cpuinfo describe this CPU).

    Returns:
        /proc/cpuinfo-style flag names.
    """
    from numpy._core._multiarray_umath import __cpu_features__

    flags = {linux for np_name, linux in NUMPY_FLAGS.items() if __cpu_features__.get(np_name)}
    if native and Path("/proc/cpuinfo").exists():
        seen = set(Path("/proc/cpuinfo").read_text().split())
        flags |= {f for f in PROC_ONLY_FLAGS if f in seen}
    return flags


def probe(specs: list[str], native: bool, out: Path) -> int:
    """Self-check ``BUNDLE[::GRAPH,GRAPH]`` specs with ORT on this (possibly emulated) CPU; write JSON.

    Imports only ``foclip.runtime`` (numpy, onnxruntime), as a production host would. A graph that
    cannot be loaded or run is recorded with its error, not raised: the parent judges it.

    Args:
        specs: bundle folders, each optionally followed by ``::`` and the graph keys to check.
        native: not under qemu.
        out: where the JSON goes.

    Returns:
        0.
    """
    import numpy
    import onnxruntime

    from foclip.errors import FoclipError
    from foclip.runtime.backends import create_runner
    from foclip.runtime.bundle import open_bundle
    from foclip.runtime.selfcheck import self_check

    results = []
    for spec in specs:
        path, _, keys = spec.partition("::")
        try:
            bundle = open_bundle(path)
        except FoclipError as exc:
            results.append({"bundle": path, "graph": "*", "error": str(exc)})
            continue
        for key in (keys.split(",") if keys else list(bundle.manifest.graphs)):
            try:
                with create_runner("ort-cpu", bundle, key) as runner:
                    r = self_check(bundle, bundle.graph(key), runner)
                results.append({"bundle": path, "graph": key, "min_cosine": r.min_cosine, "gate": r.gate,
                                "passed": r.passed})
            except Exception as exc:  # noqa: BLE001 - recorded per graph; the parent judges it
                results.append({"bundle": path, "graph": key, "error": f"{type(exc).__name__}: {exc}"})
    payload = {"flags": sorted(cpu_flags(native)), "numpy": numpy.__version__,
               "onnxruntime": onnxruntime.__version__, "results": results}
    out.write_text(json.dumps(payload, indent=1))
    return 0


# ----------------------------------------------------------------------------- driver (native)

def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), check=False)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(cmd, -1, exc.stdout or "", f"timed out after {timeout:.0f} s")


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in (text or "").splitlines() if ln.strip() and QEMU_NOISE not in ln]
    return " / ".join(lines[-n:])


def _prefix(cpu: str) -> list[str]:
    return [] if cpu == "native" else ["qemu-x86_64", "-cpu", cpu]


def preflight(cpu: str, timeout: float) -> str | None:
    """None when the runtime's wheels import on ``cpu``; else the reason to skip it."""
    r = _run([*_prefix(cpu), sys.executable, "-c", "import numpy, onnxruntime, PIL, tokenizers"], timeout)
    if r.returncode == 0:
        return None
    why = "illegal instruction" if r.returncode in (-signal.SIGILL, 128 + signal.SIGILL) else f"exit {r.returncode}"
    return f"skipped: numpy/onnxruntime/Pillow/tokenizers do not import on {cpu} ({why}: {_tail(r.stderr)})"


def run_probe(cpu: str, specs: list[str], work: Path, timeout: float) -> dict[str, Any]:
    """Run the probe natively or under qemu; the parsed JSON, or ``{"error": ...}``."""
    out = work / f"probe-{cpu}.json"
    out.unlink(missing_ok=True)
    cmd = [*_prefix(cpu), sys.executable, str(Path(__file__).resolve()), "--probe", *specs, "--json", str(out)]
    if cpu == "native":
        cmd.append("--native")
    r = _run(cmd, timeout)
    if r.returncode != 0 or not out.exists():
        return {"error": f"probe exit {r.returncode}: {_tail(r.stderr)}"}
    return json.loads(out.read_text())


def run_detect(cpu: str, bundle: Path, photos: Path, timeout: float) -> tuple[list[dict[str, Any]] | None, str]:
    """``foclip detect --precision int8 --format jsonl`` natively or under qemu: (results, error)."""
    cmd = [*_prefix(cpu), sys.executable, "-m", "foclip.cli.main", "detect", str(bundle), str(photos),
           "--precision", "int8", "--format", "jsonl", "--exit-zero"]
    r = _run(cmd, timeout)
    if r.returncode != 0:
        return None, f"detect exit {r.returncode}: {_tail(r.stderr)}"
    return [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")], ""


@dataclass(frozen=True)
class Case:
    """A bundle to check and how to read it."""

    case: str        # reference | control | bundle
    label: str       # folder name under --work
    model: str
    pretrained: str
    precisions: tuple[str, ...]
    int8_method: str
    graphs: tuple[str, ...]   # graphs to self-check (empty: all)


def default_cases() -> list[Case]:
    """The reference ViT with every precision and int8 method, and the control."""
    cases = [Case("reference", f"ref-{DEFAULT_METHOD}", REF_MODEL, "reference", ("fp32", "fp16", "int8"),
                  DEFAULT_METHOD, ())]
    cases += [Case("reference", f"ref-{m}", REF_MODEL, "reference", ("fp32", "int8"), m, ("image.int8",))
              for m in INT8_METHODS if m != DEFAULT_METHOD]
    cases.append(Case("control", "control", CONTROL_MODEL, "random", ("fp32", "int8"), CONTROL_METHOD,
                      ("image.int8",)))
    return cases


def export_cases(cases: list[Case], work: Path, log) -> dict[str, dict[str, Any]]:
    """Export each case's bundle natively (reusing one already in ``work`` with the same settings).

    Returns:
        label -> ``manifest.info["omitted"]`` (graphs the export refused, with the reason).
    """
    from foclip.exporter import ExportConfig, export_bundle
    from foclip.manifest import read_manifest

    omitted = {}
    for c in cases:
        out = work / c.label
        cfg = ExportConfig(model_name=c.model, pretrained=c.pretrained, precisions=c.precisions,
                           int8_method=c.int8_method)
        if (out / "manifest.json").exists():
            m = read_manifest(out)
            g = m.graphs.get("image.int8")
            if m.model_name == c.model and (g is None or g.quantization.get("method") == c.int8_method):
                omitted[c.label] = m.info.get("omitted", {})
                log(f"reusing {out}")
                continue
        t0 = time.perf_counter()
        m = export_bundle(cfg, out, force=True)
        omitted[c.label] = m.info.get("omitted", {})
        log(f"exported {out} ({c.model}, {c.pretrained}, int8 {c.int8_method}) in {time.perf_counter() - t0:.0f} s")
    return omitted


def write_photos(folder: Path) -> Path:
    """A few sample photos (not the self-check set) as JPEG files for the end-to-end detect."""
    from foclip.samples import sample_photos, short_name

    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.glob("*.jpg")):
        for name, img in sample_photos(4 + DETECT_PHOTOS)[4:]:
            img.save(folder / f"{short_name(name)}.jpg", quality=95)
    return folder


def method_of(graph_key: str, manifest: Any) -> str:
    """``fp32``/``fp16``, or the int8 method recorded in the manifest."""
    g = manifest.graphs[graph_key]
    return g.quantization.get("method", "int8") if g.precision == "int8" and g.quantization else g.precision


def collect(cases: list[Case], work: Path, cpu: str, probe_out: dict[str, Any], skip: str | None,
            omitted: dict[str, dict[str, Any]]) -> list[Row]:
    """Rows of one CPU from its probe output (or skipped rows)."""
    from foclip.manifest import read_manifest

    flags = set(probe_out.get("flags", []))
    by_key = {(r["bundle"], r["graph"]): r for r in probe_out.get("results", [])}
    rows = []
    for c in cases:
        path = work / c.label if c.case != "bundle" else Path(c.label)
        m = read_manifest(path)
        keys = list(c.graphs) or list(m.graphs)
        if c.case == "control" and "image.int8" in omitted.get(c.label, {}):
            rows.append(Row(c.case, CONTROL_METHOD, "image.int8", cpu, flag_list(flags), expect="refuse",
                            passed=False if cpu == "native" else None, refused_at_export=True,
                            note=str(omitted[c.label]["image.int8"])[:200]))
            continue
        for key in keys:
            method = method_of(key, m)
            row = Row("reference" if c.case == "bundle" else c.case, method, key, cpu, flag_list(flags),
                      kernel=kernel(method, flags) if flags else "", expect=expectation(c.case, method, flags))
            if skip:
                row.note = skip
            elif "error" in probe_out:
                row.note = probe_out["error"]
            else:
                got = by_key.get((str(path), key)) or by_key.get((str(path), "*"), {"error": "not run"})
                if "error" in got:
                    row.note = got["error"]
                else:
                    row.min_cosine, row.gate, row.passed = got["min_cosine"], got["gate"], got["passed"]
            rows.append(row)
    return rows


def print_table(rows: list[Row], detects: list[dict[str, Any]], host: str) -> None:
    """Print the matrix with rich."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"emulated CPU matrix (self-check vs fp32 PyTorch); host: {host}")
    for col in ("case", "method", "graph", "CPU", "flags seen", "min cosine", "gate", "result", "kernel (inferred)"):
        t.add_column(col, justify="right" if col in ("min cosine", "gate") else "left")
    for r in rows:
        ok, word = verdict(r)
        t.add_row(r.case, r.method, r.graph, r.cpu, " ".join(r.flags), "-" if r.min_cosine is None
                  else f"{r.min_cosine:.6f}", "" if r.gate is None else str(r.gate),
                  word if ok else f"[bold red]{word}[/]", r.kernel)
    con = Console(width=200)
    con.print(t)
    for d in detects:
        if "same_decisions" in d:
            con.print(f"detect --precision int8 on {d['cpu']} vs native ({d['bundle']}): {d['images']} images, "
                      f"{d['flagged']} flagged natively, same decisions: {'yes' if d['same_decisions'] else 'NO'}, "
                      f"max |Δscore| {d['max_abs_dscore']:.2e} (0..100), max |Δdrop| {d['max_abs_ddrop']:.2e}",
                      highlight=False)
        else:
            con.print(f"detect on {d['cpu']}: {d.get('note')}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Run the matrix (or, with ``--probe``, one probe); 0 when everything is as expected."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpus", default=",".join(CPU_MODELS), help="qemu CPU models (default Haswell,Nehalem)")
    ap.add_argument("--bundle", action="append", default=None, help="check this bundle instead (repeatable)")
    ap.add_argument("--work", type=Path, default=None, help="folder for bundles and photos (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    ap.add_argument("--markdown", type=Path, default=None, help="write the tables as Markdown")
    ap.add_argument("--timeout", type=float, default=1800.0, help="ceiling for one emulated process, s")
    ap.add_argument("--probe", nargs="+", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--native", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        return probe(args.probe, args.native, args.json)

    from foclip.benchmarks.cpu import cpu_info

    if os.uname().machine != "x86_64":
        print(f"error: host | is {os.uname().machine}. Expected an x86-64 host (qemu-x86_64 emulates x86-64 CPUs).",
              file=sys.stderr)
        return 1
    if shutil.which("qemu-x86_64") is None:
        print("error: qemu-x86_64 | is not installed. Expected Debian's qemu-user (apt-get install qemu-user).",
              file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    log = lambda line: print(f"[{time.perf_counter() - t0:6.1f} s] {line}", file=sys.stderr, flush=True)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="cpu-matrix-")
        args.work = Path(tmp.name)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    info = cpu_info()
    host = f"{info['model']}, {info['cores']} cores, flags {' '.join(info['flags'])}"
    cpus = [c.strip() for c in args.cpus.split(",") if c.strip()]

    if args.bundle:
        cases = [Case("bundle", str(Path(b).resolve()), "", "", (), "", ()) for b in args.bundle]
        omitted: dict[str, dict[str, Any]] = {}
        specs = [c.label for c in cases]
        detect_bundles = [Path(c.label) for c in cases]
    else:
        cases = default_cases()
        omitted = export_cases(cases, work, log)
        specs = [f"{work / c.label}::{','.join(c.graphs)}" if c.graphs else str(work / c.label) for c in cases]
        detect_bundles = [work / cases[0].label]
    photos = write_photos(work / "photos")

    from foclip.manifest import read_manifest

    rows: list[Row] = []
    detects: list[dict[str, Any]] = []
    native_detect = {}
    for b in detect_bundles:
        if "image.int8" in read_manifest(b).graphs:
            native_detect[b], err = run_detect("native", b, photos, args.timeout)
            if err:
                detects.append({"cpu": "native", "bundle": b.name, "note": err})
    def check(cpu: str) -> tuple[list[Row], list[dict[str, Any]]]:
        skip = None if cpu == "native" else preflight(cpu, args.timeout)
        log(f"{cpu}: " + (skip or "self-check"))
        out = {} if skip else run_probe(cpu, specs, work, args.timeout)
        found, compared = collect(cases, work, cpu, out, skip, omitted), []
        for b, ref in native_detect.items() if cpu != "native" else ():
            if ref is None or skip:
                compared += [{"cpu": cpu, "bundle": b.name, "note": skip}] if skip else []
                continue
            log(f"{cpu}: foclip detect --precision int8")
            got, err = run_detect(cpu, b, photos, args.timeout)
            compared.append({"cpu": cpu, "bundle": b.name, **(compare_detect(ref, got) if got is not None
                                                               else {"note": err})})
        log(f"{cpu}: done")
        return found, compared

    # The emulated CPUs run side by side: much of an emulated run is single-threaded (imports,
    # session creation), and CI has 2 cores.
    with ThreadPoolExecutor(max_workers=max(1, len(cpus))) as pool:
        for found, compared in [check("native"), *pool.map(check, cpus)]:
            rows += found
            detects += compared
    ok, problems = matrix_ok(rows, detects, need_control=not args.bundle)
    wall = time.perf_counter() - t0
    print_table(rows, detects, host)
    payload = {"host": {**info, "line": host}, "cpus": cpus, "wall_seconds": round(wall, 1), "ok": ok,
               "problems": problems, "rows": [{**asdict(r), "verdict": verdict(r)[1]} for r in rows],
               "detect": detects,
               "note": "emulation proves results, not speed: emulated timings are not reported"}
    from foclip.outputs import atomic_write_bytes

    if args.json:
        atomic_write_bytes(args.json, json.dumps(payload, indent=1).encode())
    if args.markdown:
        atomic_write_bytes(args.markdown, markdown(rows, detects, info["flags"]).encode())
    for p in problems:
        print(f"error: cpu matrix | {p}.", file=sys.stderr)
    print(f"cpu matrix: {'ok' if ok else 'FAILED'} ({len(rows)} self-checks on native + {', '.join(cpus)}; "
          f"{wall:.0f} s wall, host {host})")
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
