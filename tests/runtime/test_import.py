"""`import foclip.runtime` must not pull in torch or open_clip."""

from __future__ import annotations

import subprocess
import sys


def test_runtime_import_is_torch_free():
    code = ("import sys, foclip.runtime, foclip.runtime.detector, foclip.runtime.calibration, foclip.runtime.stats, "
            "foclip.plots, foclip.runtime.inputs, foclip.benchmarks.detect, foclip.cli.detect, foclip.cli.calibrate; "
            "bad = [m for m in ('torch', 'open_clip', 'tensorrt', 'sklearn', 'matplotlib') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"
