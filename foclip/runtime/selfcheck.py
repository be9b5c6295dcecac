"""Parity self-check on the machine that runs a graph.

Every bundle carries a small reference set (:class:`foclip.manifest.ReferenceSpec`): a few real
photos as uint8 model inputs, a few prompts as token ids, and the fp32 PyTorch embeddings of both
(photos as colour rows, then their luma-gray copies, as the detector feeds them). The self-check
runs a loaded graph on those inputs with the backend that will serve it and compares:

* image and text graphs: min cosine of each row with the PyTorch embedding, against the graph's
  ``gate_min_cosine`` (fp32 0.99999, fp16 0.999, int8 0.99);
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
from foclip.scoring import clipscore, to_gray


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
        gate: the graph's ``gate_min_cosine``.
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
    if out["image_embeddings_file"].shape != (2 * n, bundle.manifest.embed_dim):
        raise BundleError("reference image embeddings", f"have shape {out['image_embeddings_file'].shape}",
                          f"(2N, embed_dim) = ({2 * n}, {bundle.manifest.embed_dim})")
    return out


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(min=1e-30)


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
    if graph.role == "text":
        got = runner.run({graph.inputs[0].name: ref["tokens_file"].astype(np.int64)})[graph.outputs[0].name]
        cos = float(_cosines(got, ref["text_embeddings_file"]).min())
        rows = len(got)
    elif graph.role == "image":
        color = u8.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        pixels = np.concatenate([color, to_gray(color, channel_axis=1)]).astype(np.float32)
        got = runner.run({graph.inputs[0].name: pixels})[graph.outputs[0].name]
        cos = float(_cosines(got, ref["image_embeddings_file"]).min())
        rows = len(got)
    else:  # detect: scores against the reference prompts as the bank
        scale = bundle.score_scale
        bank = ref["text_embeddings_file"].astype(np.float32)
        out = runner.run({"pixels_u8": np.ascontiguousarray(u8), "text_bank": bank})
        n = len(u8)
        want = clipscore(ref["image_embeddings_file"], bank, scale)
        err = max(np.abs(out["score_color"] - want[:n]).max(), np.abs(out["score_gray"] - want[n:]).max())
        cos = float(1.0 - err / scale)
        rows = 2 * n
    return SelfCheckResult(graph.key, getattr(runner, "name", "?"), cos, graph.gate_min_cosine,
                           bool(cos >= graph.gate_min_cosine), rows, round(time.perf_counter() - t0, 4))


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
