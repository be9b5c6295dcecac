"""torch -> ONNX bundles with parity reports, text-embedding banks and TensorRT engines.

``export_bundle(ExportConfig(...), out_dir)`` writes a folder that :mod:`foclip.runtime` loads
without torch. Importing this package is cheap; torch, onnx and onnxruntime are imported inside
the functions that need them.
"""

from foclip.exporter.bundle import PARITY_NAME, bank_stem, export_bundle, parity_report
from foclip.exporter.config import PRECISIONS, ExportConfig

__all__ = ["PARITY_NAME", "PRECISIONS", "ExportConfig", "bank_stem", "export_bundle", "parity_report"]
