"""`foclip bench detect` runs every row on the tiny bundle and writes its figures (printed, not asserted)."""

from __future__ import annotations

import json

from foclip.cli.main import main


def test_bench_detect_rows(tiny_bundle, tmp_path):
    out = tmp_path / "bench.json"
    rc = main(["bench", "detect", str(tiny_bundle), "--samples", "6", "--batch", "3", "--threads", "1", "--repeat", "1",
               "--out", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
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
