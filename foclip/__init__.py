"""foclip: FoCLIP adversarial test sets, CLIP export bundles and torch-free detection.

The subpackages split by weight: ``foclip.runtime`` (numpy, PIL, onnxruntime) never imports
torch or open_clip; ``foclip.models``, ``foclip.exporter`` and ``foclip_train`` do.
"""

__version__ = "0.1.0"
