"""The CPU a benchmark ran on: model name, logical cores and the SIMD flags that decide int8 kernels.

Every speed figure foclip prints names this, since ratios (int8 vs fp32, ONNX Runtime vs PyTorch)
change with the CPU class (AVX2 only, AVX-512, VNNI, AMX).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_info() -> dict[str, object]:
    """``{"model": str, "cores": int, "flags": [the INT8_FLAGS present]}`` from /proc/cpuinfo (Linux)."""
    path = Path("/proc/cpuinfo")
    text = path.read_text() if path.exists() else ""
    flags: set[str] = set()
    model = platform.processor()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
        elif line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
    return {"model": model, "cores": os.cpu_count(), "flags": [f for f in INT8_FLAGS if f in flags]}


def cpu_line(info: dict[str, object] | None = None) -> str:
    """One line naming the CPU, e.g. ``CPU: Intel(R) Xeon(R) Processor, 2 cores, avx2 avx512_vnni``."""
    info = info or cpu_info()
    flags = " ".join(info["flags"]) or "no AVX2"  # type: ignore[arg-type]
    return f"CPU: {info['model']}, {info['cores']} cores, {flags}"
