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


# --- drop differences at the floor (issue 36: int8 |Δdrop| = 16.6 printed beside "pass")

def _floor_report(at_floor_score: float = 1.02) -> dict:
    """A parity.json as an int8 export of the reference ViT writes it: clipart above the floor, imagenet-100 at it."""
    def bank(ref: float, dd: float, dd_abs: float | None) -> dict:
        fig = {"max_abs_diff_score_color": 0.09, "max_abs_diff_score_gray": 0.27, "max_abs_diff_drop": dd,
               "ref_mean_score_color": ref, "ref_mean_drop": 0.1}
        if dd_abs is not None:
            fig["max_abs_diff_drop_abs"] = dd_abs
        return fig
    return {"score_scale": 100.0, "image_encoder": {
        "fp32": {"min_cosine": 1.0, "banks": {"clipart": bank(11.32, 4e-7, 4e-6), "imagenet-100": bank(at_floor_score, 9e-5, 4e-6)}},
        "int8": {"min_cosine": 0.9999, "banks": {"clipart": bank(11.32, 8.1e-3, 0.05),
                                                 "imagenet-100": bank(at_floor_score, 16.6, 0.223)}}}}


def test_a_bank_at_the_floor_shows_the_absolute_drop_difference():
    from foclip.runtime.parity import bank_parity, floor_note

    rows = {(r.graph, r.bank): r for r in bank_parity(_floor_report(), 100.0)}
    low, ok = rows[("image.int8", "imagenet-100")], rows[("image.int8", "clipart")]
    assert low.at_floor and low.drop_absolute and low.drop_diff == 0.223  # not the relative 16.6
    assert not ok.at_floor and not ok.drop_absolute and ok.drop_diff == 8.1e-3
    note = floor_note(list(rows.values()), 100.0)
    assert "imagenet-100 (1.02)" in note and "clipart" not in note and "min-cosine gate" in note
    # above the floor nothing is marked and there is no footnote
    assert floor_note(bank_parity(_floor_report(at_floor_score=6.0), 100.0), 100.0) is None


def test_an_old_report_at_the_floor_shows_no_relative_drop():
    from foclip.runtime.parity import bank_parity

    report = _floor_report()
    del report["image_encoder"]["int8"]["banks"]["imagenet-100"]["max_abs_diff_drop_abs"]
    row = next(r for r in bank_parity(report, 100.0) if (r.graph, r.bank) == ("image.int8", "imagenet-100"))
    assert row.at_floor and row.drop_diff is None  # never the meaningless 16.6


def test_score_parity_records_the_absolute_drop_and_the_floor():
    from foclip.exporter.parity import score_parity

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(5, 8))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    ref = rng.normal(size=(4, 8))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = ref + 1e-3 * rng.normal(size=ref.shape)
    fig = score_parity(ref, got, 2, bank, 100.0)
    assert {"max_abs_diff_drop_abs", "ref_at_floor"} <= set(fig)
    assert fig["ref_at_floor"] == (fig["ref_mean_score_color"] < 5.0)
    tiny = score_parity(ref, got, 2, bank, 100.0 * 1e-3)  # the same cosines on a scale where they are tiny
    assert tiny["ref_at_floor"] is fig["ref_at_floor"]  # the floor is a fraction of the scale
