"""Which graph a detector runs: the bundle's graphs, the backend's artifacts and the mode asked for.

Every graph has a key, ``<role>.<precision>``. ONNX Runtime backends run ``image.<precision>`` or
``detect.<precision>`` from the bundle's ONNX files; ``trt`` runs an engine of ``precision`` built
from an image graph (or from the detect graph for ``fused``). The choice never lands on a graph
for which the backend has no artifact: it names the command that makes one instead.
"""

from __future__ import annotations

from foclip.errors import BundleError, InputError, did_you_mean
from foclip.runtime.backends import canonical_backend
from foclip.runtime.bundle import Bundle
from foclip.runtime.capabilities import caps, graph_candidates

GRAPH_MODES = ("auto", "encoder", "fused")


def check_graph_mode(mode: str) -> str:
    """Return ``mode`` when it is one of :data:`GRAPH_MODES`.

    Raises:
        InputError: any other value.
    """
    if mode not in GRAPH_MODES:
        raise InputError("graph", f"is {mode!r}", f"one of {', '.join(GRAPH_MODES)}")
    return mode


def _missing(bundle: Bundle, role: str, precision: str, needs_engine: bool) -> BundleError:
    """The error for a graph the bundle has no artifact for, naming the command that makes one."""
    where = f"bundle {str(bundle.path)!r}"
    if needs_engine:
        src = f"{role}.{precision}"  # an engine's precision is its graph's (strongly typed)
        return BundleError(where, f"has no TensorRT engine at {precision} built from a {role} graph",
                           f"`foclip build-engine {bundle.path} --graph {src} --precision {precision}` first")
    have = ", ".join(k for k in bundle.manifest.graphs if k.startswith(f"{role}.")) or "none"
    make = "--detect-graph" if role == "detect" else f"--precision {precision}"
    return BundleError(where, f"has no {role}.{precision} graph (it has: {have})",
                       f"a bundle exported with `foclip export ... {make}`")


def choose_graph(bundle: Bundle, backend: str, precision: str, mode: str = "auto",
                 cascade: bool = False) -> tuple[str, bool]:
    """The graph a detector runs: never one for which the backend has no artifact.

    ONNX Runtime backends run ``image.<precision>`` or ``detect.<precision>`` from the bundle's
    ONNX files. ``trt`` runs an engine of ``precision`` built from an image graph (or from the
    detect graph for ``fused``), preferring one built from the fp32 graph. ``auto`` picks the
    fused graph only on GPU backends, without cascade, and when its artifact exists.

    Args:
        bundle: the verified bundle.
        backend: backend name.
        precision: graph precision (ORT) or engine precision (``trt``).
        mode: ``auto``, ``encoder`` or ``fused``.
        cascade: cascade mode (needs the encoder graph).

    Returns:
        ``(graph key, fused)``.

    Raises:
        BundleError: no artifact for the graph asked for; names the command that makes it.
        InputError: ``fused`` with cascade, or an unknown mode.
    """
    check_graph_mode(mode)
    canon = canonical_backend(backend)
    row = caps(canon)
    if row.precision_selects == "graph" and precision not in row.precisions:
        raise InputError(f"precision {precision!r}", f"is not a precision of {canon} graphs"
                         + did_you_mean(precision, list(row.precisions)),
                         "fp32, fp16 or int8")
    detect = graph_candidates(canon, bundle.manifest, "detect", precision)
    if mode == "fused":
        if cascade:
            raise InputError("graph='fused'", "cannot run in cascade mode (it always scores both passes)",
                             "graph='encoder' with cascade, or cascade off")
        if not detect:
            raise _missing(bundle, "detect", precision, row.needs_engine)
        return detect[0], True
    if mode == "auto" and not cascade and row.gpu and detect:
        return detect[0], True
    image = graph_candidates(canon, bundle.manifest, "image", precision)
    if not image:
        raise _missing(bundle, "image", precision, row.needs_engine)
    return image[0], False
