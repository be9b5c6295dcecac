"""`foclip bench generate` runs its rows on the tiny model and prints them (figures, not asserts)."""

from __future__ import annotations

import pytest

from foclip.cli.main import main


def test_bench_generate_prints_every_row(capsys):
    rc = main(["bench", "generate", "--model", "foclip-tiny", "--pretrained", "random", "--batch", "2", "--iters", "2", "--check-every", "1",
               "--rounds", "1", "--threads", "1"])
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0
    assert "bare forward+backward (64x64)" in out and "attack step (64x64)" in out and "attack step (native:" in out
    assert "overhead of the attack step over bare forward+backward" in out and "3 best-iterate checks" in out
    assert "CPU: " in out and " cores" in out


def test_bench_generate_library_returns_figures():
    from foclip_train.bench import BenchGenerateConfig, measure_generate

    res = measure_generate(BenchGenerateConfig(model="foclip-tiny", batch=1, iters=1, rounds=1, threads=1,
                                               native=False))
    assert [r["path"].split(" (")[0] for r in res["rows"]] == ["bare forward+backward", "attack step"]
    assert all(r["image_iters_per_s"] > 0 for r in res["rows"]) and res["rows"][0]["vs_bare"] == 1.0


@pytest.mark.parametrize("variant", ["channels_last", pytest.param("compile", marks=pytest.mark.slow)])
def test_bench_generate_variant_rows_report_their_distance_from_eager(variant):
    from foclip_train.bench import BenchGenerateConfig, measure_generate

    res = measure_generate(BenchGenerateConfig(model="foclip-tiny", batch=1, iters=2, rounds=1, threads=1,
                                               native=False, **{variant: True}))
    rows = {r["path"].split(" (")[0]: r for r in res["rows"]}
    name = {"channels_last": "attack step, channels-last", "compile": "attack step, torch.compile"}[variant]
    for row in (rows["attack step, eager copy"], rows[name]):  # the control and the variant
        # the same weights and inputs, another layout or compiled kernels: the same 8-bit result
        assert row["max_pixel_diff_vs_eager"] <= 1 and row["max_score_diff_vs_eager"] < 1e-3
        assert row["vs_eager_attack"] > 0 and row["first_call_s"] > 0


def test_sweep_and_draft_scripts_run_on_the_tiny_bundle(tiny_bundle, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "sweep"
    subprocess.run([sys.executable, str(root / "scripts" / "measure" / "bench_sweep.py"), str(tiny_bundle), "--batches", "1,4",
                    "--images", "4", "--counts", "2,4", "--batch", "2", "--rounds", "1", "--out", str(out)],
                   check=True, capture_output=True)
    res = json.loads(out.with_suffix(".json").read_text())
    assert set(res["batch_sweep"]["fp32"]) == {"1", "4"} and out.with_suffix(".png").stat().st_size > 0
    draft = tmp_path / "draft.json"
    subprocess.run([sys.executable, str(root / "scripts" / "measure" / "decode_draft.py"), str(tiny_bundle), "--short", "600",
                    "--photos", "2", "--factors", "0,1", "--rounds", "1", "--out", str(draft)],
                   check=True, capture_output=True)
    rows = json.loads(draft.read_text())["rows"]
    assert rows["0"]["max_abs_score_diff"] == 0.0 and rows["1"]["agreement"] >= 0.5
