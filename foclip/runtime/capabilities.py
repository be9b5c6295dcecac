"""What each backend can do, in one table: the place a new backend is described.

One :class:`BackendCaps` row per backend says how users may name it, which ONNX Runtime
providers it asks for, what ``precision`` selects (a bundle graph, or a TensorRT engine built from
one), whether it needs an engine, which backend embeds its custom prompts, whether ``auto`` picks
the fused graph on it, and its calibration-compatibility class. The readers:
:func:`foclip.runtime.backends.canonical_backend` (aliases), ``SessionFromBundle`` (providers),
:func:`foclip.runtime.graph_choice.choose_graph` (graph keys, precision), the text bank
(:func:`text_bank_backend`), :mod:`foclip.serve.config` (:func:`default_backend`, :attr:`gpu`),
``foclip inspect --verify`` (:func:`verify_targets`) and the calibration's compatibility check
(:func:`calibration_class`).
"""

from __future__ import annotations

from dataclasses import dataclass

from foclip.manifest import PRECISIONS, Manifest


@dataclass(frozen=True)
class BackendCaps:
    """One backend's capabilities.

    Attributes:
        name: canonical name.
        aliases: other names users may give (matched case-insensitively, ``_`` as ``-``).
        providers: ONNX Runtime execution providers, in order (empty: not ONNX Runtime).
        extra: the pip extra that installs it.
        precision_selects: ``graph`` (``precision`` picks the bundle's ``<role>.<precision>``
            ONNX file) or ``engine`` (the precision of a TensorRT engine built from a graph).
        precisions: the precisions it accepts.
        needs_engine: runs engines built by ``foclip build-engine``, not the ONNX files.
        text_bank_backend: the backend that embeds custom prompts with the bundle's fp32 text
            encoder (TensorRT has no text engine; its prompts run on ONNX Runtime CPU).
        gpu: a GPU backend (``--graph auto`` picks the fused graph on it; serve's GPU defaults).
        calibration_class: calibrations carry between backends of one class with a warning
            (their scores are all held to the same PyTorch reference by the parity gates).
    """

    name: str
    aliases: tuple[str, ...]
    providers: tuple[str, ...]
    extra: str
    precision_selects: str
    precisions: tuple[str, ...]
    needs_engine: bool
    text_bank_backend: str
    gpu: bool
    calibration_class: str


TABLE: dict[str, BackendCaps] = {c.name: c for c in (
    BackendCaps("ort-cpu", ("ort", "cpu", "onnxruntime", "onnxruntime-cpu", "cpuexecutionprovider"),
                ("CPUExecutionProvider",), "cpu", "graph", PRECISIONS, False, "ort-cpu", False,
                "pytorch-parity"),
    BackendCaps("ort-cuda", ("cuda", "gpu", "onnxruntime-cuda", "onnxruntime-gpu", "cudaexecutionprovider"),
                ("CUDAExecutionProvider", "CPUExecutionProvider"), "gpu", "graph", PRECISIONS, False, "ort-cuda",
                True, "pytorch-parity"),
    # TensorRT precisions are those of the graphs foclip exports (strongly typed engines: the
    # precision comes from the graph; no bf16 graph is exported, int8 would need Q/DQ graphs)
    BackendCaps("trt", ("tensorrt",), (), "trt", "engine", ("fp16", "fp32"), True,
                "ort-cpu", True, "pytorch-parity"),
)}
BACKENDS = tuple(TABLE)
ALIASES: dict[str, str] = {a: c.name for c in TABLE.values() for a in (c.name, *c.aliases)}


def caps(name: str) -> BackendCaps:
    """The row of a canonical backend name (see :func:`foclip.runtime.backends.canonical_backend`)."""
    return TABLE[name]


def graph_candidates(name: str, manifest: Manifest, role: str, precision: str) -> list[str]:
    """Graph keys of ``role`` that backend ``name`` can run at ``precision``, best first.

    ONNX Runtime: ``<role>.<precision>`` when the bundle has it. TensorRT: the graphs an engine of
    ``precision`` was built from, the fp32 graph first.
    """
    if caps(name).needs_engine:
        keys = {e.graph for e in manifest.engines if e.graph.startswith(f"{role}.") and e.precision == precision}
        return sorted(keys, key=lambda k: (k != f"{role}.fp32", k))
    key = f"{role}.{precision}"
    return [key] if key in manifest.graphs else []


def verify_targets(name: str, manifest: Manifest) -> list[tuple[str, str]]:
    """``(graph key, precision)`` of everything backend ``name`` can run from this manifest."""
    if caps(name).needs_engine:
        return [(e.graph, e.precision) for e in manifest.engines]
    return [(k, g.precision) for k, g in manifest.graphs.items()]


def text_bank_backend(name: str) -> str:
    """The backend that embeds custom prompts for a detector on backend ``name``."""
    return caps(name).text_bank_backend


def default_backend(gpu: bool) -> str:
    """The backend ``auto`` resolves to: the first ONNX Runtime one with or without a GPU."""
    return next(c.name for c in TABLE.values() if c.providers and c.gpu == gpu)


def lookup(name: str) -> BackendCaps | None:
    """The row of any name of a backend (aliases too), or None for an unknown name (no error)."""
    return TABLE.get(ALIASES.get(name.strip().lower().replace("_", "-"), ""))


def calibration_class(name: str) -> str | None:
    """The calibration-compatibility class of a backend; None for an unknown name."""
    row = lookup(name)
    return row.calibration_class if row is not None else None


__all__ = ["ALIASES", "BACKENDS", "TABLE", "BackendCaps", "calibration_class", "caps", "default_backend",
           "graph_candidates", "lookup", "text_bank_backend", "verify_targets"]
