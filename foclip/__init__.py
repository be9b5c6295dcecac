"""foclip: FoCLIP adversarial test sets, CLIP export bundles and torch-free detection.

The subpackages split by weight: ``foclip.runtime`` (numpy, PIL, onnxruntime) never imports
torch or open_clip; ``foclip.models``, ``foclip.exporter`` and ``foclip_train`` do.
"""

# The one place the version is written (pyproject reads it; docs/changes.md says what each one changed).
__version__ = "0.3.0"
