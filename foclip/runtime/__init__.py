"""Torch-free runtime: numpy + PIL + onnxruntime (tensorrt only when that backend is chosen)."""
