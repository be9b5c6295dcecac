"""Torch-free runtime: numpy + PIL + onnxruntime (tensorrt only when that backend is chosen).

    from foclip.runtime import Detector
    det = Detector.from_bundle("bundle/", backend="ort-cpu", precision="int8",
                               calibration="calibration.json")
    for r in det.detect(["a.jpg", "b.png"]):
        print(r.to_dict())

See docs/runtime.md. Importing this package never imports torch or open_clip.
"""

from foclip.runtime.backends import BACKENDS, Runner, available_backends, create_runner
from foclip.runtime.bundle import Bundle, TextBank, bundle_hash, open_bundle
from foclip.runtime.calibration import Calibration, fit_calibration
from foclip.runtime.decode import ERROR_CODES, DecodeLimits, ItemError
from foclip.runtime.detector import (
    DEFAULT_TAU_DROP,
    DEFAULT_TAU_SCORE,
    DetectConfig,
    DetectionResult,
    Detector,
)
from foclip.runtime.graph_choice import choose_graph
from foclip.runtime.selfcheck import SelfCheckError, SelfCheckResult, self_check
from foclip.runtime.stats import roc_auc, search_thresholds
from foclip.runtime.text_bank import embed_prompts, resolve_text_bank

__all__ = [
    "BACKENDS",
    "DEFAULT_TAU_DROP",
    "DEFAULT_TAU_SCORE",
    "ERROR_CODES",
    "Bundle",
    "Calibration",
    "DecodeLimits",
    "DetectConfig",
    "DetectionResult",
    "Detector",
    "ItemError",
    "Runner",
    "SelfCheckError",
    "SelfCheckResult",
    "TextBank",
    "available_backends",
    "bundle_hash",
    "choose_graph",
    "create_runner",
    "embed_prompts",
    "fit_calibration",
    "open_bundle",
    "resolve_text_bank",
    "roc_auc",
    "search_thresholds",
    "self_check",
]
