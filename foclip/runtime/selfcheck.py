"""Parity self-check on the machine that runs a graph.

Every bundle carries a small reference set (:class:`foclip.manifest.ReferenceSpec`): a few real
photos as uint8 model inputs, a few prompts as token ids, and the fp32 PyTorch embeddings of both
(photos as colour rows, then their luma-gray copies, as the detector feeds them). The self-check
runs a loaded graph on those inputs with the backend that will serve it and compares:

* image and text graphs: min cosine of each row with the PyTorch embedding, against the runner's
  gate: the graph's ``gate_min_cosine`` (fp32 0.99999, fp16 0.999, int8 0.99), or for a TensorRT
  engine the gate of the *engine's* precision recorded with it (an fp16 engine built from
  ``image.fp32`` is held to fp16's gate, not fp32's);
* detect graphs: max |score difference| against the scores of the PyTorch embeddings (with the
  reference prompts as the text bank), turned into the same cosine scale (a cosine error of e on
  every pair moves a score by at most ``score_scale * e``).

Why here and not only at export: int8 kernels differ between CPUs (VNNI or not), fp16 between
GPUs, TensorRT engines between builds. A graph that passed on the export machine can lose accuracy
where it is served; this catches it before the first request.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from foclip.errors import BundleError
from foclip.manifest import GraphSpec
from foclip.runtime.bundle import Bundle
from foclip.runtime.parity import compare, passes_gate, probe_stack
from foclip.scoring import clipscore


class _Runs(Protocol):
    name: str

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class SelfCheckError(BundleError):
    """A graph misses its parity gate on this machine."""


@dataclass(frozen=True)
class SelfCheckResult:
    """The outcome of one self-check.

    Attributes:
        graph: graph key (``image.int8``…).
        backend: backend that ran it.
        min_cosine: least cosine against PyTorch over the reference rows (for a detect graph,
            ``1 - max score error / score_scale``).
        gate: the gate it was held to (the graph's, or a TensorRT engine's own).
        passed: ``min_cosine >= gate``.
        rows: reference rows run.
        seconds: wall time of the check.
    """

    graph: str
    backend: str
    min_cosine: float
    gate: float
    passed: bool
    rows: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``/v1/info``, detect metadata)."""
        return asdict(self)


def _load(bundle: Bundle) -> dict[str, np.ndarray]:
    ref = bundle.manifest.reference
    if ref is None:
        raise BundleError(f"bundle {str(bundle.path)!r}", "has no self-check reference set",
                          "a bundle exported by foclip 0.2 or later (re-export it with `foclip export`)")
    out = {}
    for key in ("pixels_file", "image_embeddings_file", "tokens_file", "text_embeddings_file"):
        try:
            out[key] = np.load(bundle.file(getattr(ref, key)), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BundleError(f"reference file {getattr(ref, key)!r}", f"cannot be read ({exc})",
                              "the .npy files `foclip export` wrote") from exc
    for key, arr in out.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise BundleError(f"reference file {getattr(ref, key)!r}", "holds NaN or infinite values",
                              "the finite .npy files `foclip export` wrote")
    n, s = len(out["pixels_file"]), bundle.manifest.preprocess.image_size
    if out["pixels_file"].shape != (n, s, s, 3) or out["pixels_file"].dtype != np.uint8:
        raise BundleError("reference pixels", f"have shape {out['pixels_file'].shape} {out['pixels_file'].dtype}",
                          f"uint8 (N, {s}, {s}, 3)")
    rows = len(probe_stack(out["pixels_file"][:1])) * n  # colour rows, then each parity probe's
    if out["image_embeddings_file"].shape != (rows, bundle.manifest.embed_dim):
        raise BundleError("reference image embeddings", f"have shape {out['image_embeddings_file'].shape}",
                          f"(rows of the probe stack, embed_dim) = ({rows}, {bundle.manifest.embed_dim}); "
                          f"re-export the bundle with this foclip")
    return out


def self_check(bundle: Bundle, graph: GraphSpec, runner: _Runs) -> SelfCheckResult:
    """Run ``graph`` on the bundle's reference set with ``runner`` and compare with PyTorch.

    Args:
        bundle: the opened bundle (its reference set is read from it).
        graph: the manifest's graph that ``runner`` runs.
        runner: an active runner or backend for that graph (anything with ``run(feeds)``).

    Returns:
        The result (whether it passed or not; see :func:`require_pass`).

    Raises:
        BundleError: the bundle has no reference set, or its files are unreadable.
    """
    t0 = time.perf_counter()
    ref = _load(bundle)
    u8 = ref["pixels_file"]
    gate = float(getattr(runner, "gate_min_cosine", graph.gate_min_cosine))
    if graph.role in ("text", "image"):
        feed, want = ((ref["tokens_file"].astype(np.int64), ref["text_embeddings_file"]) if graph.role == "text"
                      else (probe_stack(u8), ref["image_embeddings_file"]))
        c = compare(runner, {graph.inputs[0].name: feed}, want, gate, output=graph.outputs[0].name)
        return SelfCheckResult(graph.key, getattr(runner, "name", "?"), c.min_cosine, gate, c.passed, c.rows,
                               round(time.perf_counter() - t0, 4))
    # detect: scores against the reference prompts as the bank (the fused graph scores colour + gray)
    scale = bundle.score_scale
    bank = ref["text_embeddings_file"].astype(np.float32)
    out = runner.run({"pixels_u8": np.ascontiguousarray(u8), "text_bank": bank})
    n = len(u8)
    want = clipscore(ref["image_embeddings_file"], bank, scale)
    err = max(np.abs(out["score_color"] - want[:n]).max(), np.abs(out["score_gray"] - want[n:2 * n]).max())
    cos = float(1.0 - err / scale)
    return SelfCheckResult(graph.key, getattr(runner, "name", "?"), cos, gate,
                           passes_gate(cos, gate), 2 * n, round(time.perf_counter() - t0, 4))


def require_pass(result: SelfCheckResult) -> SelfCheckResult:
    """Return ``result`` if it passed, else raise a one-line error saying what to do.

    Raises:
        SelfCheckError: naming the graph, the backend, the cosine, the gate and the remedies.
    """
    if result.passed:
        return result
    prec = result.graph.split(".")[-1]
    fix = ("re-export with `--int8-method dynamic-u8s7` (holds on CPUs without VNNI), or run --precision fp32"
           if prec == "int8" else "run --precision fp32, or re-export the bundle on this machine")
    raise SelfCheckError(f"graph {result.graph} on {result.backend}",
                         f"min cosine vs the bundle's PyTorch reference is {result.min_cosine:.6f} on this machine, "
                         f"below its gate {result.gate}",
                         f"a graph that holds here: {fix}; or skip the check with --no-self-check at your own risk")


def check_engine_profile(runner: Any, *, fused: bool, batch_size: int, image_size: int, probes: tuple[str, ...],
                         cascade: bool, text_bank: np.ndarray) -> None:
    """Refuse at load a batch size or text bank a TensorRT engine's profile cannot take.

    The largest call a detector makes: ``batch_size`` rows per probe (plus the colour rows
    without cascade), or for the fused graph ``batch_size`` images and the whole text bank.
    Runners without a profile (ONNX Runtime) take any batch; nothing is checked for them.

    Args:
        runner: the loaded runner; checked only when it has ``check_profile(feeds)``.
        fused: whether it runs the fused detect graph.
        batch_size: images per call.
        image_size: the bundle's model input side.
        probes: the detector's colour-space probes.
        cascade: cascade mode (the colour rows run apart from the probe rows).
        text_bank: the detector's text bank embeddings (fed to the fused graph).

    Raises:
        BackendError: the largest call falls outside the engine's profile.
    """
    check = getattr(runner, "check_profile", None)
    if check is None:
        return
    n, s = batch_size, image_size
    if fused:
        feeds = {"pixels_u8": np.broadcast_to(np.zeros(1, np.uint8), (n, s, s, 3)), "text_bank": text_bank}
    else:
        rows = max(n, n * len(probes)) if cascade else n * (len(probes) + 1)
        feeds = {runner.graph.inputs[0].name: np.broadcast_to(np.zeros(1, np.float32), (rows, 3, s, s))}
    check(feeds)


def check_at_start(bundle: Bundle, runner: Any, *, fused: bool, batch_size: int, probes: tuple[str, ...],
                   cascade: bool, text_bank: np.ndarray, parity: bool = True) -> SelfCheckResult | None:
    """The checks a detector runs once its graph is loaded, before its first item.

    First the engine profile (:func:`check_engine_profile`), then, when ``parity`` is on, the
    self-check of the loaded graph (:func:`self_check`), which must pass (:func:`require_pass`).

    Args:
        bundle: the opened bundle.
        runner: the active runner of the detector's graph (with ``graph`` and ``run``).
        fused: whether the runner runs the fused detect graph.
        batch_size: images per call.
        probes: the detector's colour-space probes.
        cascade: cascade mode.
        text_bank: the detector's text bank embeddings.
        parity: run the self-check (``--no-self-check`` turns it off).

    Returns:
        The passed self-check, or ``None`` when ``parity`` is off.

    Raises:
        BackendError: the engine's profile cannot take the detector's largest call.
        SelfCheckError: the graph misses its parity gate on this machine.
        BundleError: the bundle's reference set is missing or unreadable.
    """
    check_engine_profile(runner, fused=fused, batch_size=batch_size, image_size=bundle.manifest.preprocess.image_size,
                         probes=probes, cascade=cascade, text_bank=text_bank)
    return require_pass(self_check(bundle, runner.graph, runner)) if parity else None
