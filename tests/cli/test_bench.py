"""`foclip bench generate` runs its rows on the tiny model and prints them (figures, not asserts)."""

from __future__ import annotations

from foclip.cli.main import main


def test_bench_generate_prints_every_row(capsys):
    rc = main(["bench", "generate", "--model", "foclip-tiny", "--batch", "2", "--iters", "2", "--check-every", "1",
               "--rounds", "1", "--threads", "1"])
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0
    assert "bare forward+backward (64x64)" in out and "attack step (64x64)" in out and "attack step (native:" in out
    assert "overhead of the attack step over bare forward+backward" in out and "3 best-iterate checks" in out


def test_bench_generate_library_returns_figures():
    from foclip_train.bench import BenchGenerateConfig, measure_generate

    res = measure_generate(BenchGenerateConfig(model="foclip-tiny", batch=1, iters=1, rounds=1, threads=1,
                                               native=False))
    assert [r["path"].split(" (")[0] for r in res["rows"]] == ["bare forward+backward", "attack step"]
    assert all(r["image_iters_per_s"] > 0 for r in res["rows"]) and res["rows"][0]["vs_bare"] == 1.0
