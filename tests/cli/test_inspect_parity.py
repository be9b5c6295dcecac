"""`foclip inspect`'s parity tables: a text bank at the floor is marked, its drop difference is the absolute one,
and a footnote says why (issue 36: int8 max |Δdrop| = 16.6 printed beside "pass" for imagenet-100)."""

from __future__ import annotations

import io

from rich.console import Console

from foclip.cli import common
from foclip.cli.inspect import _parity_tables


def _report() -> dict:
    def bank(ref: float, dd: float, dd_abs: float) -> dict:
        return {"max_abs_diff_score_color": 0.09, "max_abs_diff_score_gray": 0.27, "max_abs_diff_drop": dd,
                "max_abs_diff_drop_abs": dd_abs, "ref_mean_score_color": ref, "ref_mean_drop": 0.1}
    return {"score_scale": 100.0, "image_encoder": {"int8": {
        "min_cosine": 0.999902, "max_abs_diff": 4.2e-3, "gate_min_cosine": 0.99,
        "banks": {"clipart": bank(11.32, 8.1e-3, 0.05), "imagenet-100": bank(1.02, 16.6, 0.223)}}},
        "text_encoder": {}}


def test_floor_rows_are_marked_with_the_absolute_drop_and_a_footnote(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=buf, width=80, color_system=None))
    _parity_tables(_report(), 100.0)
    text = buf.getvalue()
    rows = {line.split("│")[2].strip(): line for line in text.splitlines() if line.startswith("│ image.int8")
            and line.count("│") > 4}
    assert "2.23e-01 abs *" in rows["imagenet-100 *"] and "1.66e+01" not in text
    assert "8.10e-03" in rows["clipart"] and "*" not in rows["clipart"]
    flat = " ".join(text.split())
    assert "* at the floor" in flat and "imagenet-100 (1.02)" in flat and "min-cosine gate" in flat
    assert max(len(line) for line in text.splitlines()) <= 80
