"""The calibration file and its binding to a bundle (numpy only).

:class:`Calibration` holds ``tau_score`` and ``tau_drop`` and what they were made with (bundle, prompts,
backend, precision, graph, probes); :meth:`Calibration.load` checks every value's type and range, and
:meth:`Calibration.check_compatible` refuses a calibration made with something the detector does not run.
:func:`fit_calibration` chooses the thresholds with :mod:`foclip.runtime.stats` (the threshold search,
ROC, held-out k-fold evaluation and their intervals; the decision rule is described there) and wraps them.
Plots of a calibration are :mod:`foclip.plots` (the ``plots`` extra).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from foclip.errors import BundleError, InputError
from foclip.manifest import atomic_write_json
from foclip.runtime.capabilities import calibration_class
from foclip.runtime.stats import (
    MODES,
    evaluate,
    held_out_evaluation,
    sample_size_warnings,
    search_thresholds,
    threshold_edge_warnings,
)

SCHEMA = 1
MAX_TAU_DROP = 1.0 + 1e-9  # drop <= 1; see Calibration._checked


class CalibrationWarning(UserWarning):
    """A calibration used on a close but not identical setup (same precision, other backend/graph)."""


@dataclass(frozen=True)
class Calibration:
    """Thresholds chosen on labelled data, and what they were made with.

    Attributes:
        tau_score: score gate on the 0..score_scale scale.
        tau_drop: drop threshold, a fraction.
        mode: ``fpr`` or ``max-accuracy``.
        target_fpr: the FPR asked for (``fpr`` mode).
        bundle_hash: :func:`foclip.runtime.bundle.bundle_hash` of the bundle used.
        backend: backend used to score the calibration images.
        precision: image-encoder precision used.
        score_scale: w of the scores.
        text_bank: ``{"name", "sha256", "count"}`` of the prompts used.
        metrics: counts, rates, AUCs, class means (see :func:`evaluate`).
        created: ISO timestamp.
        graph: key of the graph that scored the images (``image.fp32``, ``detect.fp32``…; empty
            in files from foclip 0.1, read as ``image.<precision>``).
        probes: the colour-space probes whose statistic the thresholds apply to (``["gray"]``:
            the gray drop, the paper's rule).
    """

    tau_score: float
    tau_drop: float
    mode: str
    target_fpr: float
    bundle_hash: str
    backend: str
    precision: str
    score_scale: float
    text_bank: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    schema: int = SCHEMA
    graph: str = ""
    probes: tuple[str, ...] = ("gray",)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``calibration.json`` atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        """Read a calibration file, checking every value's type and range.

        Raises:
            InputError: missing, unreadable or malformed file, or a value of the wrong type or
                range (NaN or boolean thresholds, an unknown schema or mode…), naming the field.
        """
        path = Path(path)
        where = f"calibration {str(path)!r}"
        expected = "a calibration.json written by `foclip calibrate`"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(where, "does not exist", expected) from exc
        except (OSError, ValueError) as exc:
            raise InputError(where, f"cannot be read ({exc.__class__.__name__}: {exc})", expected) from exc
        try:
            return cls._checked(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(where, f"is invalid: {str(exc).strip(chr(39))}", expected) from exc

    @classmethod
    def _checked(cls, d: Any) -> Calibration:
        if not isinstance(d, dict):
            raise TypeError(f"it is a JSON {type(d).__name__}, not an object")

        def num(key: str, lo: float, hi: float) -> float:
            v = d[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                raise ValueError(f"{key} is {v!r}, expected a finite number from {lo:g} to {hi:g}")
            return float(v)

        def text(key: str, default: str | None = None) -> str:
            v = d.get(key, default) if default is not None else d[key]
            if not isinstance(v, str):
                raise TypeError(f"{key} is {v!r}, expected a string")
            return v

        def probe_list() -> tuple[str, ...]:
            v = d.get("probes", ["gray"])
            if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                raise TypeError(f"probes is {v!r}, expected a list of probe names")
            return tuple(v)

        if d.get("schema", SCHEMA) != SCHEMA:
            raise ValueError(f"schema is {d.get('schema')!r}, expected {SCHEMA}")
        if text("mode") not in MODES:
            raise ValueError(f"mode is {d['mode']!r}, expected one of {', '.join(MODES)}")
        bank = d["text_bank"]
        if not isinstance(bank, dict) or not isinstance(bank.get("sha256"), str):
            raise TypeError("text_bank is not an object with a sha256 string")
        if not isinstance(d.get("metrics", {}), dict):
            raise TypeError("metrics is not an object")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        # Scores are scale * mean(max(cos, 0)), in 0..score_scale, and drop = 1 - score_gray / score_color
        # is at most 1: thresholds past those can flag nothing, so they are refused, not loaded as calibrated.
        # (MAX_TAU_DROP leaves room for the fitter's "flag none", the next float above a largest drop of 1.)
        scale = num("score_scale", 1e-6, 1e6)
        known.update(tau_score=num("tau_score", 0.0, scale), tau_drop=num("tau_drop", -math.inf, MAX_TAU_DROP),
                     target_fpr=num("target_fpr", 0.0, 1.0), score_scale=scale,
                     bundle_hash=text("bundle_hash"), backend=text("backend"), precision=text("precision"),
                     graph=text("graph", ""), created=text("created", ""), probes=probe_list())
        return cls(**known)

    @property
    def graph_key(self) -> str:
        """The graph that made the scores (``image.<precision>`` for files without one)."""
        return self.graph or f"image.{self.precision}"

    def check_compatible(self, bundle_hash: str, bank_sha256: str, bundle_name: str = "bundle",
                         score_scale: float | None = None, graph: str | None = None,
                         precision: str | None = None, backend: str | None = None,
                         probes: tuple[str, ...] | None = None) -> list[str]:
        """Refuse a calibration that was not made with what the detector runs.

        Refused: another bundle, prompt set, score scale, or precision (fp32 thresholds do not
        carry to int8: their scores differ). Allowed with a warning (the documented close pair):
        the same precision on another backend or through the fused graph, whose parity gates keep
        every score within 1e-4 x score_scale of the encoder's.

        Returns:
            The warnings (empty when everything matches); also issued once through ``warnings``.

        Raises:
            BundleError: a refused mismatch, naming both sides and the command that fixes it.
        """

        if self.bundle_hash != bundle_hash:
            raise BundleError("calibration", f"was made with bundle {self.bundle_hash[:12]}, not "
                              f"{bundle_name} ({bundle_hash[:12]})",
                              "a calibration made with `foclip calibrate` on this bundle")
        if self.text_bank.get("sha256") != bank_sha256:
            raise BundleError("calibration", f"was made with prompts {self.text_bank.get('name')!r} "
                              f"({str(self.text_bank.get('sha256'))[:12]}), not the detector's ({bank_sha256[:12]})",
                              "the same prompts as at calibration time")
        if score_scale is not None and abs(self.score_scale - score_scale) > 1e-9 * score_scale:
            raise BundleError("calibration", f"has score_scale {self.score_scale:g}, the bundle {score_scale:g}",
                              "a calibration made on this bundle")
        if precision is not None and self.precision != precision:
            raise BundleError("calibration", f"was made at precision {self.precision}, the detector runs {precision}",
                              f"a calibration made at {precision} (`foclip calibrate ... --precision {precision}`)")
        if probes is not None and tuple(self.probes) != tuple(probes):
            raise BundleError("calibration", f"was made with probes {','.join(self.probes)}, the detector uses "
                              f"{','.join(probes)}", f"a calibration made with --probes {','.join(probes)}")
        notes = []
        if graph is not None and self.graph_key != graph:
            notes.append(f"calibration was made with graph {self.graph_key}, the detector runs {graph}")

        theirs, ours = calibration_class(self.backend), calibration_class(backend or "")
        if theirs and ours and theirs != ours:  # the backend table's classes; unknown names only warn, as before
            raise BundleError("calibration", f"was made on {self.backend}, whose scores {backend}'s parity gates do "
                              "not bound", f"a calibration made on {backend}")
        if backend is not None and self.backend != backend:
            notes.append(f"calibration was made on {self.backend}, the detector runs {backend}")
        for note in notes:
            warnings.warn(f"{note} (same precision: scores agree within the parity gates)", CalibrationWarning,
                          stacklevel=2)
        return notes

    def summary(self) -> dict[str, Any]:
        """The fields a service or a log line wants."""
        m = self.metrics
        return {"tau_score": self.tau_score, "tau_drop": self.tau_drop, "mode": self.mode,
                "target_fpr": self.target_fpr, "backend": self.backend, "precision": self.precision,
                "bundle_hash": self.bundle_hash, "text_bank": self.text_bank.get("name"), "graph": self.graph_key,
                "roc_auc": m.get("roc_auc"), "tpr": m.get("tpr"), "fpr": m.get("fpr"),
                "accuracy": m.get("accuracy"), "created": self.created}


def fit_calibration(score_orig: np.ndarray, drop_orig: np.ndarray, score_man: np.ndarray,
                    drop_man: np.ndarray, *, bundle_hash: str, backend: str, precision: str,
                    score_scale: float, text_bank: dict[str, Any], target_fpr: float = 0.05,
                    mode: str = "fpr", extra_metrics: dict[str, Any] | None = None, folds: int = 5,
                    seed: int = 0) -> Calibration:
    """Search thresholds, evaluate them on the fit set and held out, and wrap the result.

    Args:
        score_orig: score_color of originals.
        drop_orig: drop of originals.
        score_man: score_color of manipulated images.
        drop_man: drop of manipulated images.
        bundle_hash: the bundle's hash.
        backend: backend that produced the scores.
        precision: precision that produced the scores.
        score_scale: w.
        text_bank: ``{"name", "sha256", "count"}``.
        target_fpr: FPR target (``fpr`` mode).
        mode: ``fpr`` or ``max-accuracy``.
        extra_metrics: merged into ``metrics`` (e.g. error counts).
        folds: k of the held-out cross-validation (``metrics["held_out"]``; < 2 turns it off).
        seed: seed of the fold assignment and the AUC bootstrap.

    Returns:
        The calibration; ``metrics`` holds the fit-set figures (see :func:`evaluate`),
        ``held_out`` (see :func:`held_out_evaluation`), ``warnings`` (see
        :func:`sample_size_warnings`) and ``threshold_warnings`` (see
        :func:`threshold_edge_warnings`).

    Raises:
        InputError: see :func:`search_thresholds`.
    """
    ts, td = search_thresholds(score_orig, drop_orig, score_man, drop_man, target_fpr, mode)
    metrics = evaluate(score_orig, drop_orig, score_man, drop_man, ts, td)
    metrics["held_out"] = held_out_evaluation(score_orig, drop_orig, score_man, drop_man, target_fpr, mode,
                                              folds, seed)
    metrics["warnings"] = sample_size_warnings(len(score_orig), len(score_man), target_fpr, mode, folds)
    # Degenerate thresholds are said, not left for the user to notice (issue 23).
    metrics["threshold_warnings"] = threshold_edge_warnings(score_orig, drop_orig, score_man, drop_man, ts, td)
    h = metrics["held_out"]
    if "tau_score_range" in h and h["tau_score_range"][0] <= 0.0 < ts:
        metrics["threshold_warnings"].append("at least one held-out fold chose tau_score 0 (no score gate): the "
                                             "score gate is fragile on these data")
    metrics.update(extra_metrics or {})
    return Calibration(tau_score=ts, tau_drop=td, mode=mode, target_fpr=target_fpr, bundle_hash=bundle_hash,
                       backend=backend, precision=precision, score_scale=score_scale, text_bank=text_bank,
                       metrics=metrics, created=datetime.datetime.now(datetime.timezone.utc).isoformat())
