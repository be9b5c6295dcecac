"""Grayscale-sensitivity detection of FoCLIP-manipulated images, in batches, without torch.

For a batch of N decoded images (uint8, resized and centre-cropped as open_clip's eval
transform) the detector builds the [0, 1] colour pixels and their luma copies
(:func:`foclip.scoring.to_gray`), runs **one** image-encoder call on the 2N stacked inputs, and
scores both against the text bank with :func:`foclip.scoring.clipscore`::

    drop     = (score_color - score_gray) / score_color          (a fraction)
    tampered = score_color >= tau_score and drop >= tau_drop

Cascade mode runs the colour pass first and the gray pass only for images with
``score_color >= tau_score``; the others cannot be tampered whatever their drop, so the
decisions are the same as without cascade (their ``score_gray`` and ``drop`` are ``None``).

Without a calibration the thresholds are :data:`DEFAULT_TAU_SCORE` (0: no score gate) and
:data:`DEFAULT_TAU_DROP` (0.35, between the paper's 8.5 % drop on originals and 63.2 % on
manipulated images) and every result says ``"calibrated": false``. Calibrate on your own model
and data (``foclip calibrate``) before trusting a decision.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from foclip.errors import InputError, did_you_mean
from foclip.runtime.backends import Runner, canonical_backend, create_runner, require_backend
from foclip.runtime.bundle import Bundle, TextBank, open_bundle
from foclip.runtime.calibration import MAX_TAU_DROP, Calibration
from foclip.runtime.decode import DecodeLimits, ItemError, configure_pil, decode_item
from foclip.runtime.graph_choice import GRAPH_MODES, check_graph_mode, choose_graph
from foclip.runtime.parity import probe_stack
from foclip.runtime.selfcheck import SelfCheckResult, check_at_start
from foclip.runtime.text_bank import resolve_text_bank
from foclip.scoring import DEFAULT_PROBES, PROBES, check_probes, clipscore
from foclip.scoring import drop as relative_drop

__all__ = ["DEFAULT_TAU_DROP", "DEFAULT_TAU_SCORE", "GRAPH_MODES", "DetectConfig", "DetectionResult", "Detector",
           "choose_graph"]

DEFAULT_TAU_SCORE = 0.0
DEFAULT_TAU_DROP = 0.35


@dataclass(frozen=True)
class DetectConfig:
    """Knobs of a :class:`Detector`.

    Attributes:
        backend: ``ort-cpu``, ``ort-cuda`` or ``trt``.
        precision: image-graph precision in the bundle (``fp32``, ``fp16``, ``int8``), or the
            engine precision for ``trt`` (``fp16``, ``fp32``).
        cascade: run the gray pass only where ``score_color >= tau_score``.
        batch_size: images per encoder call (2x rows without cascade).
        tau_score: score gate on the 0..score_scale scale (from the calibration when given).
        tau_drop: drop threshold as a fraction (from the calibration when given).
        graph: ``encoder`` (image encoder + numpy scoring), ``fused`` (the bundle's detection
            graph: uint8 in, scores out), or ``auto`` (fused on GPU backends when the backend has
            an artifact for it and cascade is off; encoder otherwise). See :func:`choose_graph`.
        threads: ONNX Runtime intra-op threads; 0 = one per core.
        spin_wait: ONNX Runtime threads busy-wait between calls; fastest when the detector has
            the cores to itself, False where it shares them (the HTTP service's replicas).
        mem_arena: keep ONNX Runtime's CPU memory arena. It keeps the largest batch's buffers for
            good; False frees them after each batch, so a long-running process's RSS comes back
            (the HTTP service's replicas; measured ~4 % slower, docs/serve.md).
        decode_workers: threads decoding the next batch while the current one runs; 0 decodes
            in the calling thread.
        limits: header limits applied before decoding.
        self_check: run the bundle's reference set through the loaded graph at start and refuse
            a graph that misses its parity gate on this machine (:mod:`foclip.runtime.selfcheck`).
        probes: colour-space probes scored beside the colour image in the same encoder call
            (:data:`foclip.scoring.PROBES`). With the default ``("gray",)`` the decision uses the
            gray ``drop`` (the paper's rule); with more, it uses ``probe_drop``, the largest
            relative drop over the probes, with the same two thresholds.
    """

    backend: str = "ort-cpu"
    precision: str = "fp32"
    cascade: bool = False
    batch_size: int = 32
    tau_score: float = DEFAULT_TAU_SCORE
    tau_drop: float = DEFAULT_TAU_DROP
    graph: str = "auto"
    threads: int = 0
    spin_wait: bool = True
    mem_arena: bool = True
    decode_workers: int = 2
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    self_check: bool = True
    probes: tuple[str, ...] = DEFAULT_PROBES


@dataclass
class DetectionResult:
    """The verdict on one item.

    Attributes:
        id: the caller's id, or the path, or ``item-<index>``.
        score_color: mean CLIPscore of the colour image (0..score_scale), ``None`` on error.
        score_gray: the same for its grayscale copy; ``None`` on error or when cascade skipped it.
        drop: ``(score_color - score_gray) / score_color`` as a fraction; ``None`` when no gray pass.
        tampered: the decision; ``None`` on error.
        error: ``None`` or ``{"code": ..., "message": ...}``.
        calibrated: whether the thresholds came from a calibration.
        score_scale: w of the scores.
        probe_scores: score per colour-space probe (only with probes other than ``gray`` alone).
        probe_drop: the largest relative drop over the probes (the multi-probe statistic);
            ``None`` with the default gray probe alone.
    """

    id: str
    score_color: float | None = None
    score_gray: float | None = None
    drop: float | None = None
    tampered: bool | None = None
    error: dict[str, str] | None = None
    calibrated: bool = False
    score_scale: float = 100.0
    probe_scores: dict[str, float] | None = None
    probe_drop: float | None = None

    @property
    def ok(self) -> bool:
        """True when the item was decoded and scored."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the JSONL line of ``foclip detect`` and the service's item)."""
        out = {"id": self.id, "score_color": self.score_color, "score_gray": self.score_gray,
               "drop": self.drop, "tampered": self.tampered, "error": self.error,
               "calibrated": self.calibrated, "score_scale": self.score_scale}
        if self.probe_scores is not None:
            out.update(probe_scores=self.probe_scores, probe_drop=self.probe_drop)
        return out

    @property
    def statistic(self) -> float | None:
        """What ``tau_drop`` is compared with: ``probe_drop`` with several probes, else ``drop``."""
        return self.probe_drop if self.probe_scores is not None else self.drop


def _checked(config: DetectConfig, score_scale: float) -> DetectConfig:
    """``config`` with its backend name and probes made canonical, after checking every knob.

    Raises:
        InputError: a batch size, threshold, graph mode or probe name out of range.
    """
    if config.batch_size < 1:
        raise InputError("batch_size", f"is {config.batch_size}", "a positive integer")
    # Reachable ranges (scores in 0..score_scale, drop <= 1): a threshold outside can flag nothing.
    if not (math.isfinite(config.tau_score) and 0.0 <= config.tau_score <= score_scale):
        raise InputError("tau_score", f"is {config.tau_score!r}", f"a number from 0 to {score_scale:g} "
                         "(the bundle's score scale)")
    if not (math.isfinite(config.tau_drop) and config.tau_drop <= MAX_TAU_DROP):
        raise InputError("tau_drop", f"is {config.tau_drop!r}", "a finite fraction of at most 1")
    check_graph_mode(config.graph)
    try:
        probes = check_probes(config.probes)
    except ValueError as exc:
        hints = "".join(did_you_mean(p, PROBES) for p in config.probes if p not in PROBES)
        raise InputError("probes", str(exc).removeprefix(f"probes {list(config.probes)} ") + hints,
                         f"distinct names among {', '.join(PROBES)}") from None
    return replace(config, backend=canonical_backend(config.backend), probes=probes)


def _default_id(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, Image.Image) and getattr(item, "filename", ""):
        return str(item.filename)
    return f"item-{index}"


class Detector:
    """Loads a bundle once and decides, per image, whether it was FoCLIP-manipulated.

    Thread-safe for concurrent :meth:`detect` calls on every backend (ONNX Runtime sessions are;
    the TensorRT runner serialises calls on its one context); timing counters are approximate
    under concurrency.
    """

    def __init__(self, bundle: Bundle, config: DetectConfig, text_bank: TextBank,
                 calibration: Calibration | None = None) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.text_bank = text_bank
        self.calibration = calibration
        self.score_scale = bundle.score_scale
        if calibration is not None:
            config = replace(config, tau_score=calibration.tau_score, tau_drop=calibration.tau_drop)
        config = _checked(config, self.score_scale)
        probes = config.probes
        self.config = config
        self.spec = self.manifest.preprocess
        self.multi_probe = probes != DEFAULT_PROBES
        self.graph_key, self.fused = choose_graph(bundle, config.backend, config.precision, config.graph,
                                                  config.cascade or self.multi_probe)
        if calibration is not None:
            calibration.check_compatible(bundle.bundle_hash, text_bank.sha256, str(bundle.path),
                                         score_scale=bundle.score_scale, graph=self.graph_key,
                                         precision=config.precision, backend=config.backend, probes=probes)
        self.backend: Runner = create_runner(config.backend, bundle, self.graph_key, engine_precision=config.precision,
                                             threads=config.threads, spin_wait=config.spin_wait,
                                             mem_arena=config.mem_arena)
        try:
            self.self_check: SelfCheckResult | None = check_at_start(
                bundle, self.backend, fused=self.fused, batch_size=config.batch_size, probes=probes,
                cascade=config.cascade, text_bank=text_bank.embeddings, parity=config.self_check)
        except BaseException:
            self.backend.deactivate()
            raise
        configure_pil(config.limits)
        self._pool: ThreadPoolExecutor | None = None
        self.reset_stats()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], backend: str = "ort-cpu", precision: str = "fp32",
                    calibration: str | os.PathLike[str] | Calibration | None = None,
                    prompts: str | Sequence[str] | None = None, cascade: bool = False,
                    batch_size: int = 32, **options: Any) -> Detector:
        """Open and verify a bundle, load its graph on a backend, and pick the text bank.

        Args:
            path: bundle folder written by ``foclip export``.
            backend: ``ort-cpu`` | ``ort-cuda`` | ``trt`` (forgiving names; never falls back).
            precision: ``fp32`` | ``fp16`` | ``int8`` (must be in the bundle).
            calibration: ``calibration.json`` path or a :class:`Calibration`; must have been made
                with this bundle and the same prompts.
            prompts: ``None`` -> the bundle's first text bank (the first ``--prompts`` set at
                export); a bank name; a path to a prompt file (one prompt a line); or a list of
                prompt strings. Prompts that are not a bundled bank are embedded once here with
                the bundle's text encoder and torch-free tokenizer.
            cascade: gray pass only where ``score_color >= tau_score``.
            batch_size: images per encoder call.
            **options: any other :class:`DetectConfig` field (``threads``, ``decode_workers``,
                ``graph``, ``tau_score``, ``tau_drop``, ``limits``).

        Returns:
            A ready detector.

        Raises:
            BundleError: bundle missing, tampered, without the precision, or calibration made
                with another bundle or prompt set.
            BackendError: unknown or unavailable backend.
            InputError: bad option values or prompt file.
        """
        unknown = set(options) - {f for f in DetectConfig.__dataclass_fields__}
        if unknown:
            raise InputError("Detector options", f"include unknown {sorted(unknown)}",
                             f"fields of DetectConfig: {', '.join(DetectConfig.__dataclass_fields__)}")
        config = DetectConfig(backend=backend, precision=precision, cascade=cascade, batch_size=batch_size,
                              **options)
        bundle = open_bundle(path)
        if calibration is not None and not isinstance(calibration, Calibration):
            calibration = Calibration.load(calibration)
        require_backend(config.backend)
        bank = resolve_text_bank(bundle, prompts, config.backend, config.threads)
        return cls(bundle, config, bank, calibration)

    # ----------------------------------------------------------------- public API
    @property
    def calibrated(self) -> bool:
        """True when thresholds come from a calibration."""
        return self.calibration is not None

    def detect(self, items: Iterable[Any], ids: Sequence[str] | None = None) -> list[DetectionResult]:
        """Detect on a finite collection of items.

        Args:
            items: paths, bytes, PIL images or uint8 arrays (mixed allowed).
            ids: optional ids, one per item (default: the path, or ``item-<index>``).

        Returns:
            One result per item, in order. Bad items have ``error`` set; they never fail the batch.

        Raises:
            InputError: ``ids`` of another length than ``items``.
        """
        items = list(items)
        if ids is not None:
            ids = [str(i) for i in ids]
            if len(ids) != len(items):
                raise InputError("ids", f"has {len(ids)} entries for {len(items)} items", "one id per item")
            return list(self.detect_iter(zip(ids, items)))
        return list(self.detect_iter(items))

    def detect_iter(self, iterable: Iterable[Any], batch_size: int | None = None) -> Iterator[DetectionResult]:
        """Stream results with bounded memory (at most two batches decoded at a time).

        Args:
            iterable: items, or ``(id, item)`` pairs; may be an endless generator.
            batch_size: overrides the detector's batch size.

        Yields:
            One :class:`DetectionResult` per item, in input order.
        """
        bs = int(batch_size or self.config.batch_size)
        counter = itertools.count()

        def tagged() -> Iterator[tuple[str, Any]]:
            for i, obj in zip(counter, iterable):
                if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str):
                    yield obj
                else:
                    yield _default_id(obj, i), obj

        source = tagged()
        pool = self._get_pool()
        t0 = time.perf_counter()
        current = self._submit(pool, list(itertools.islice(source, bs)))
        while current:
            upcoming = self._submit(pool, list(itertools.islice(source, bs)))  # decode ahead
            yield from self._finish(current)
            current = upcoming
        self.stats["wall_s"] += time.perf_counter() - t0

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary for ``/v1/info`` and ``foclip detect``."""
        m = self.manifest
        return {
            "bundle": str(self.bundle.path), "bundle_hash": self.bundle.bundle_hash,
            "model_name": m.model_name, "pretrained": m.pretrained, "random_init": m.random_init,
            "embed_dim": m.embed_dim, "image_size": m.preprocess.image_size,
            "backend": self.config.backend, "precision": self.config.precision,
            "graph": "fused" if self.fused else "encoder", "graph_key": self.graph_key,
            "cascade": self.config.cascade,
            "self_check": self.self_check.to_dict() if self.self_check else {"skipped": True},
            "probes": list(self.config.probes),
            "batch_size": self.config.batch_size, "backend_detail": self.backend.describe(),
            "text_bank": {"name": self.text_bank.name, "count": len(self.text_bank.prompts),
                          "sha256": self.text_bank.sha256},
            "score_scale": self.score_scale, "calibrated": self.calibrated,
            "tau_score": self.config.tau_score, "tau_drop": self.config.tau_drop,
            "calibration": self.calibration.summary() if self.calibration else None,
            "limits": {"max_pixels": self.config.limits.max_pixels, "max_aspect": self.config.limits.max_aspect,
                       "min_side": self.config.limits.min_side},
            "versions": dict(m.versions),
        }

    def reset_stats(self) -> None:
        """Zero the timing counters in :attr:`stats`."""
        self.stats: dict[str, float] = {"items": 0, "errors": 0, "batches": 0, "gray_rows": 0,
                                        "decode_s": 0.0, "prepare_s": 0.0, "encode_s": 0.0,
                                        "score_s": 0.0, "wall_s": 0.0}

    def close(self) -> None:
        """Stop the decode threads and release the graph's session or engine."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.backend.deactivate()

    def __enter__(self) -> Detector:  # noqa: PYI034 - py310 target, no typing.Self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals
    def _get_pool(self) -> ThreadPoolExecutor | None:
        if self.config.decode_workers <= 0:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.decode_workers, thread_name_prefix="foclip-decode")
        return self._pool

    def _decode(self, item_id: str, item: Any) -> tuple[np.ndarray | ItemError, float]:
        t0 = time.perf_counter()
        try:
            out: np.ndarray | ItemError = decode_item(item, repr(item_id), self.spec, self.config.limits)
        except ItemError as exc:
            out = exc
        except Exception as exc:  # noqa: BLE001 - untrusted files make PIL raise many classes
            out = ItemError("decode_failed", repr(item_id), f"cannot be decoded ({exc.__class__.__name__}: {exc})",
                            "a valid image file")
        return out, time.perf_counter() - t0

    def _submit(self, pool: ThreadPoolExecutor | None, chunk: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        if pool is None:
            return [(i, self._decode(i, item)) for i, item in chunk]
        return [(i, pool.submit(self._decode, i, item)) for i, item in chunk]

    def _finish(self, chunk: list[tuple[str, Any]]) -> list[DetectionResult]:
        ids, arrays, results = [], [], []
        for item_id, pending in chunk:
            out, seconds = pending.result() if isinstance(pending, Future) else pending
            self.stats["decode_s"] += seconds
            result = DetectionResult(id=item_id, calibrated=self.calibrated, score_scale=self.score_scale)
            if isinstance(out, ItemError):
                result.error = {"code": out.code, "message": out.message}
                self.stats["errors"] += 1
            else:
                ids.append(len(results))
                arrays.append(out)
            results.append(result)
        self.stats["items"] += len(results)
        if arrays:
            self.stats["batches"] += 1
            scores = self.score_probes(np.stack(arrays))
            color = scores["color"]
            gray = scores.get("gray", np.full(len(color), np.nan))
            drop = _drop(color, gray)
            stat = drop
            if self.multi_probe:
                drops = np.stack([_drop(color, scores[p]) for p in self.config.probes], axis=1)
                stat = np.where(np.isnan(drops).all(1), np.nan, np.nanmax(np.nan_to_num(drops, nan=-np.inf), 1))
            tampered = (color >= self.config.tau_score) & (np.nan_to_num(stat, nan=-np.inf) >= self.config.tau_drop)
            for k, idx in enumerate(ids):
                r = results[idx]
                r.score_color = float(color[k])
                r.score_gray = None if np.isnan(gray[k]) else float(gray[k])
                r.drop = None if np.isnan(drop[k]) else float(drop[k])
                r.tampered = bool(tampered[k])
                if self.multi_probe:
                    r.probe_scores = {p: None if np.isnan(scores[p][k]) else float(scores[p][k])
                                      for p in self.config.probes}
                    r.probe_drop = None if np.isnan(stat[k]) else float(stat[k])
        return results

    def score_pixels(self, pixels_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Colour and gray scores of a batch of decoded images.

        Args:
            pixels_u8: uint8 (N, S, S, 3) RGB, resized and cropped (see :func:`decode_item`).

        Returns:
            ``(score_color, score_gray)`` float64 (N,) each on the 0..score_scale scale;
            ``score_gray`` is NaN where cascade skipped the gray pass, or without a gray probe.
        """
        scores = self.score_probes(pixels_u8)
        return scores["color"], scores.get("gray", np.full(len(scores["color"]), np.nan))

    def score_probes(self, pixels_u8: np.ndarray) -> dict[str, np.ndarray]:
        """Scores of a batch and of each configured probe of it, in one encoder call.

        Without cascade the N colour rows and N rows per probe are stacked into one call; with
        cascade the colour rows run first and the probes only where ``score_color >= tau_score``.

        Args:
            pixels_u8: uint8 (N, S, S, 3) RGB, resized and cropped.

        Returns:
            ``{"color": (N,), <probe>: (N,) ...}`` float64 on the 0..score_scale scale; NaN where
            cascade skipped a row.
        """
        n = pixels_u8.shape[0]
        if self.fused:
            t0 = time.perf_counter()
            out = self.backend.run({"pixels_u8": np.ascontiguousarray(pixels_u8),
                                    "text_bank": self.text_bank.embeddings})
            self.stats["encode_s"] += time.perf_counter() - t0
            self.stats["gray_rows"] += n
            return {"color": out["score_color"].astype(np.float64), "gray": out["score_gray"].astype(np.float64)}
        t0 = time.perf_counter()
        probes = self.config.probes
        bank = self.text_bank.embeddings
        if not self.config.cascade:
            stacked = probe_stack(pixels_u8, probes)
            self.stats["prepare_s"] += time.perf_counter() - t0
            emb = self._encode(stacked)
            self.stats["gray_rows"] += n * len(probes)
            t1 = time.perf_counter()
            scores = clipscore(emb, bank, self.score_scale)
            self.stats["score_s"] += time.perf_counter() - t1
            return {"color": scores[:n], **{p: scores[(i + 1) * n:(i + 2) * n] for i, p in enumerate(probes)}}
        color = probe_stack(pixels_u8, ())
        self.stats["prepare_s"] += time.perf_counter() - t0
        out = {"color": clipscore(self._encode(color), bank, self.score_scale)}
        out.update({p: np.full(n, np.nan) for p in probes})
        gate = out["color"] >= self.config.tau_score
        if gate.any():
            t0 = time.perf_counter()
            rows = probe_stack(pixels_u8[gate], probes, color=False)
            self.stats["prepare_s"] += time.perf_counter() - t0
            scores = clipscore(self._encode(rows), bank, self.score_scale)
            m = int(gate.sum())
            for i, p in enumerate(probes):
                out[p][gate] = scores[i * m:(i + 1) * m]
            self.stats["gray_rows"] += m * len(probes)
        return out

    def _encode(self, pixels: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        emb = self.backend.run({self.backend.graph.inputs[0].name: pixels})
        self.stats["encode_s"] += time.perf_counter() - t0
        return emb[self.backend.graph.outputs[0].name]


def _drop(color: np.ndarray, gray: np.ndarray) -> np.ndarray:
    out = relative_drop(color, np.nan_to_num(gray))
    return np.where(np.isnan(gray), np.nan, out)
