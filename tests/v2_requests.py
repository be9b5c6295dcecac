"""Open Inference Protocol requests built by hand from the binary-tensor extension's definition
(independent of the server), shared by the v2 tests."""

from __future__ import annotations

import json
import struct
from typing import Any


def binary_request(images: list[bytes], outputs: Any = None, params: Any = None,
                   size: int | None = None) -> tuple[bytes, dict[str, str]]:
    """A binary-tensor infer body and its header-length header.

    Args:
        images: the encoded images, one BYTES element each.
        outputs: the request's ``outputs`` (omitted when None).
        params: the request's ``parameters`` (omitted when None).
        size: ``binary_data_size`` to declare (default: the true size; another value makes a lie).
    """
    raw = b"".join(struct.pack("<I", len(b)) + b for b in images)
    head: dict[str, Any] = {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [len(images)],
                                        "parameters": {"binary_data_size": len(raw) if size is None else size}}]}
    if outputs is not None:
        head["outputs"] = outputs
    if params is not None:
        head["parameters"] = params
    h = json.dumps(head).encode()
    return h + raw, {"inference-header-content-length": str(len(h))}
