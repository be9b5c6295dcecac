"""RayMetrics records what Ray's OpenTelemetry histograms accept (no Ray started: its classes are faked)."""

from __future__ import annotations

import pytest


class _Recorder:
    def __init__(self, name, description="", boundaries=None, tag_keys=None):
        self.name, self.values = name, []

    def observe(self, value, tags=None):
        self.values.append(value)

    def inc(self, value=1, tags=None):
        self.values.append(value)


def test_a_negative_drop_lands_in_the_first_bucket_not_nowhere(monkeypatch):
    metrics = pytest.importorskip("ray.util.metrics")
    monkeypatch.setattr(metrics, "Histogram", _Recorder)
    monkeypatch.setattr(metrics, "Counter", _Recorder)
    from foclip.serve.metrics import DROP_BOUNDS, RayMetrics

    m = RayMetrics(100.0)
    m.results([{"score_color": 20.0, "drop": -0.4}, {"score_color": 30.0, "drop": 0.6},
               {"error": {"code": "decode_failed"}}])
    # OpenTelemetry ignores negative histogram records; the gray image scoring higher is still counted
    assert m._drop.values == [0.0, 0.6] and m._drop.values[0] <= DROP_BOUNDS[0]
    assert m._score.values == [20.0, 30.0] and m._images.values == [1, 1, 1]
