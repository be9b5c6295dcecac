"""The runtime's parity core: probe stack, cosine rows, gate, compare over a runner."""

from __future__ import annotations

import numpy as np

from foclip.runtime.parity import compare, cosine_rows, passes_gate, probe_stack
from foclip.scoring import apply_probe


def test_probe_stack_is_colour_then_each_probe():
    u8 = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    x = u8.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    got = probe_stack(u8, ("gray", "hue180"))
    want = np.concatenate([x, apply_probe(x, "gray", 1), apply_probe(x, "hue180", 1)])
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
    assert probe_stack(u8, ()).tobytes() == x.tobytes()
    assert probe_stack(u8, ("hue180",), color=False).tobytes() == want[6:].tobytes()


def test_cosine_rows_and_gate():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [1.0, np.sqrt(0.5), 0.0])
    assert passes_gate(0.999, 0.999) and not passes_gate(0.9989, 0.999)


class _Scaled:
    """A runner whose output is its input, scaled, with one row bent (a reduced-precision stand-in)."""

    def __init__(self):
        self.batches: list[int] = []

    def run(self, feeds):
        (x,) = feeds.values()
        self.batches.append(len(x))
        out = 3.0 * x
        out[:, 0] += 0.01
        return {"embedding": out, "other": x}


def test_compare_runs_in_batches_and_holds_to_the_gate():
    x = np.random.default_rng(1).normal(size=(5, 16)).astype(np.float32)
    runner = _Scaled()
    c = compare(runner, {"pixels": x}, x, gate=0.99, output="embedding", batch=2)
    assert runner.batches == [2, 2, 1] and c.rows == 5 and c.output.shape == (5, 16)
    assert c.passed and 0.99 < c.min_cosine < 1.0 and c.max_abs_diff > 1.0  # scale does not count, offset does
    strict = compare(_Scaled(), {"pixels": x}, x, gate=c.min_cosine + 1e-9)
    assert not strict.passed and strict.gate == c.min_cosine + 1e-9
