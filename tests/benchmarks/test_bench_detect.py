"""`foclip bench detect` runs every row on the tiny bundle and writes its figures (printed, not asserted)."""

from __future__ import annotations

import json

import pytest

from foclip.cli.main import main


def test_bench_detect_rows(tiny_bundle, tmp_path):
    out = tmp_path / "bench.json"
    rc = main(["bench", "detect", str(tiny_bundle), "--samples", "6", "--batch", "3", "--threads", "1", "--repeat", "1",
               "--out", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["cpu"]["cores"] >= 1 and isinstance(d["cpu"]["flags"], list)  # every figure names its CPU
    names = [r["row"] for r in d["rows"]]
    assert names[0].startswith("(a) PyTorch") and any(n.startswith("(b)") for n in names)
    assert any(n.startswith("(d)") for n in names) and any(n.startswith("(e) fused") for n in names)
    probe_row = next(r for r in d["rows"] if r["row"].startswith("(f) multi-probe"))
    assert probe_row["gray_rows"] == 3 * probe_row["n"]  # gray, hue180, swap-rb rows per image
    rows = {r["row"][:3]: r for r in d["rows"]}
    assert rows["(b)"]["agreement_gated"] == 1.0  # fp32 runtime decides as PyTorch on 6 photos
    assert rows["(b)"]["max_abs_score_diff"] < 1e-3
    cascade = rows["(d)"]
    assert cascade["agreement_gated"] == 1.0 and cascade["gray_rows"] < cascade["n"]


def test_bench_detect_compare_adds_int8_rows_per_method(tiny_bundle, tmp_path):
    from foclip.errors import InputError
    from foclip.exporter import ExportConfig, export_bundle

    other = tmp_path / "u8u8"
    export_bundle(ExportConfig(model_name="foclip-tiny", pretrained="random", prompts=("artistic",),
                               precisions=("fp32", "int8"), opset=18, seed=0, detect_graph=False,
                               int8_method="dynamic-u8u8"), other)
    out = tmp_path / "bench.json"
    rc = main(["bench", "detect", str(tiny_bundle), "--samples", "4", "--batch", "2", "--threads", "1",
               "--repeat", "1", "--skip-torch", "--probes", "gray", "--compare", str(other), "--out", str(out)])
    assert rc == 0
    names = [r["row"] for r in json.loads(out.read_text())["rows"]]
    for method in ("dynamic-u8s7", "dynamic-u8u8"):
        assert f"(c) runtime int8 [{method}]" in names
        assert f"(d') runtime int8 [{method}] + cascade" in names
        assert f"encoder only int8 [{method}]" in names

    from foclip.benchmarks.detect import BenchDetectConfig, run_bench_detect

    # the same bundle twice repeats its method: refused before any row runs
    with pytest.raises(InputError, match=r"repeats int8 method \[dynamic-u8s7\]"):
        run_bench_detect(BenchDetectConfig(str(tiny_bundle), samples=2, batch=2, repeat=1, skip_torch=True,
                                           compare=(str(tiny_bundle),)))
