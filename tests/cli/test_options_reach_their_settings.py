"""Options no other test ran: each one reaches the setting it names, or does what its help says.

Where running the command for real would take minutes (a reference build, a Ray service, a
benchmark), the library call the command makes is replaced by one that records what it was given
and stops the command (:class:`Captured`); everything before it (parsing, range checks, the
config the command builds) runs as in a real call.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from foclip.cli.main import main, parse

TINY = ["--model", "foclip-tiny", "--pretrained", "random"]


class Captured(Exception):
    """Raised by a stand-in library call, carrying what the command passed to it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("captured")
        self.args_, self.kwargs = args, kwargs


def _stand_in(monkeypatch: pytest.MonkeyPatch, *targets: str) -> None:
    """Replace each dotted ``module.attr`` (present ones only) by a call that raises :class:`Captured`."""

    def fake(*args: Any, **kwargs: Any) -> Any:
        raise Captured(*args, **kwargs)

    for target in targets:
        monkeypatch.setattr(target, fake, raising=False)


def _captured(argv: list[str]) -> Captured:
    with pytest.raises(Captured) as info:
        main(argv)
    return info.value


# ----------------------------------------------------------------------------- generate
def test_generate_attack_options_reach_the_attack_config():
    from foclip.cli.generate import config_from_args

    cfg = config_from_args(parse(["generate", "x.png", "--out", "o", "--lr", "3.5", "--momentum", "0.5",
                                  "--alpha", "2", "--beta", "20", "--score-scale", "2.5", "--amp", "bf16",
                                  "--space", "model", *TINY]))
    a = cfg.attack
    assert (a.lr, a.momentum, a.alpha, a.beta, a.score_scale, a.amp, a.space) == (3.5, 0.5, 2.0, 20.0, 2.5, "bf16",
                                                                                 "model")


def test_generate_with_bf16_autocast_in_model_space_writes_an_image(sample_photo_dir, tmp_path):
    out = tmp_path / "out"
    photo = min(sample_photo_dir.glob("*.jpg"))
    assert main(["generate", str(photo), "--out", str(out), "--iters", "2", "--batch", "1", "--amp", "bf16",
                 "--space", "model", "--device", "cpu", *TINY]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.endswith("}")]
    assert len(rows) == 1 and not rows[0].get("error")


# ----------------------------------------------------------------------------- export
def test_export_options_reach_the_export_config(monkeypatch, tmp_path):
    _stand_in(monkeypatch, "foclip.exporter.export_bundle", "foclip.cli.export.export_bundle")
    base = ["export", "--out", str(tmp_path / "b"), *TINY]
    cfg = _captured([*base, "--opset", "17", "--int8-optimize"]).args_[0]
    assert (cfg.opset, cfg.int8_optimize, cfg.detect_graph) == (17, True, False)
    # --no-detect-graph is the default since 0.2, kept so that old scripts run: it wins over --detect-graph
    assert _captured([*base, "--detect-graph"]).args_[0].detect_graph is True
    assert _captured([*base, "--detect-graph", "--no-detect-graph"]).args_[0].detect_graph is False


# ----------------------------------------------------------------------------- build-engine
def test_build_engine_encoder_is_refused_with_the_graph_to_use(capsys):
    assert main(["build-engine", "bundle", "--encoder", "text"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--encoder text" in err and "--graph text.fp16" in err


# ----------------------------------------------------------------------------- detect
def _detect(tiny_bundle: Path, images: Path, out: Path, *flags: str) -> tuple[int, list[dict], dict]:
    rc = main(["detect", str(tiny_bundle), str(images), "--threads", "1", "--out", str(out), *flags])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return rc, rows, json.loads(Path(f"{out}.meta.json").read_text())


def test_detect_cascade_keeps_every_decision(tiny_bundle, sample_photo_dir, tmp_path):
    _, plain, _ = _detect(tiny_bundle, sample_photo_dir, tmp_path / "plain.jsonl")
    _, cascade, meta = _detect(tiny_bundle, sample_photo_dir, tmp_path / "cascade.jsonl", "--cascade")
    assert meta["settings"]["cascade"] is True
    assert [(r["id"], r["tampered"]) for r in cascade] == [(r["id"], r["tampered"]) for r in plain]


def test_detect_max_file_mb_refuses_larger_files_without_reading_them(tiny_bundle, sample_photo_dir, tmp_path):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "small.png")  # ~100 bytes
    photo = min(sample_photo_dir.glob("*.jpg"))
    (folder / photo.name).write_bytes(photo.read_bytes())  # tens of kB
    rc, rows, meta = _detect(tiny_bundle, folder, tmp_path / "r.jsonl", "--max-file-mb", "0.001")
    assert rc in (4, 5) and meta["settings"]["max_file_mb"] == 0.001  # 4: an input could not be read (5: + flagged)
    codes = {Path(r["id"]).name: (r["error"] or {}).get("code") for r in rows}
    assert codes == {"small.png": None, photo.name: "file_too_large"}


# ----------------------------------------------------------------------------- reproduce
def test_reproduce_space_reaches_the_attack_config():
    from foclip.cli.reproduce import config_from_args

    attack = config_from_args(parse(["reproduce", "--out", "r", "--space", "native", "--output", "input"])).attack
    assert (attack.space, attack.output) == ("native", "input")


# ----------------------------------------------------------------------------- serve
def test_serve_options_reach_the_service_config(tiny_bundle):
    from foclip.cli.serve import config_from_args

    cfg = config_from_args(parse(["serve", str(tiny_bundle), "--host", "0.0.0.0", "--gpus-per-replica", "0.5",
                                  "--max-request-mpx", "12", "--max-header-kb", "16", "--header-timeout-s", "7",
                                  "--max-uploads-per-client", "3", "--cascade"]))
    lim = cfg.limits
    assert (cfg.host, cfg.gpus_per_replica, cfg.cascade) == ("0.0.0.0", 0.5, True)
    assert (lim.max_request_pixels, lim.max_header_bytes, lim.header_timeout_s, lim.max_uploads_per_client) == (
        12_000_000, 16 * 1024, 7.0, 3)
    assert cfg.resolved_backend == "ort-cuda"  # a GPU share picks the GPU backend


def test_serve_metrics_port_and_ray_external_reach_the_service_start(tiny_bundle, monkeypatch):
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # the command installs handlers: not in pytest
    _stand_in(monkeypatch, "foclip.serve.service.start_service", "foclip.cli.serve.start_service")
    got = _captured(["serve", str(tiny_bundle), "--metrics-port", "9123", "--ray-external"]).kwargs
    assert got["metrics_port"] == 9123 and got["ray_external"] is True
    got = _captured(["serve", str(tiny_bundle)]).kwargs
    assert got["metrics_port"] == 0 and got["ray_external"] is False


# ----------------------------------------------------------------------------- bench
def test_bench_generate_variant_flags_reach_the_bench_config(monkeypatch):
    _stand_in(monkeypatch, "foclip.cli.bench.measure_generate", "foclip_train.bench.measure_generate")
    cfg = _captured(["bench", "generate", "--compile", "--channels-last", *TINY]).args_[0]
    assert cfg.compile is True and cfg.channels_last is True
    cfg = _captured(["bench", "generate", *TINY]).args_[0]
    assert cfg.compile is False and cfg.channels_last is False


def test_bench_detect_options_reach_the_bench_config(tiny_bundle, monkeypatch, tmp_path):
    _stand_in(monkeypatch, "foclip.benchmarks.detect.run_bench_detect", "foclip.cli.bench.run_bench_detect")
    ckpt = tmp_path / "w.safetensors"
    cfg = _captured(["bench", "detect", str(tiny_bundle), "--decode-workers", "0", "--clean-fraction", "0.5",
                     "--checkpoint", str(ckpt)]).args_[0]
    assert (cfg.decode_workers, cfg.clean_fraction, cfg.checkpoint) == (0, 0.5, str(ckpt))


# ----------------------------------------------------------------------------- reference
def test_reference_build_install_copies_the_checkpoint_and_card(monkeypatch, tmp_path):
    installed = tmp_path / "package_reference"
    installed.mkdir()
    monkeypatch.setattr("foclip.models.loader.REFERENCE_DIR", installed)
    heldout = {"zero_shot_top1": 1.0, "n_categories": 2, "zero_shot_chance": 50.0, "zero_shot_majority": 50.0,
               "zero_shot_balanced": 1.0, "i2t_r1": 1.0, "i2t_r5": 2.0, "n_images": 4}

    def fake_build(build: Any, on_data: Any, on_step: Any) -> dict[str, Any]:  # stands for minutes of training
        (build.out / "w.safetensors").write_bytes(b"weights")
        (build.out / f"{build.model}.json").write_text("{}")
        return {"heldout": heldout, "weights": "w.safetensors", "wall_s": {"train_log": 1}, "sha256": "0" * 64}

    monkeypatch.setattr("foclip_train.reference.build.run_build", fake_build)
    out = tmp_path / "out"
    argv = ["reference", "build", "--model", "foclip-ref-vit", "--work", str(tmp_path / "w"), "--out", str(out)]
    assert main(argv) == 0 and not list(installed.iterdir())  # without --install the package is left alone
    assert main([*argv, "--install"]) == 0
    assert sorted(p.name for p in installed.iterdir()) == ["foclip-ref-vit.json", "w.safetensors"]


def test_reference_select_candidates_reach_the_selection(monkeypatch, tmp_path):
    monkeypatch.setattr("foclip_train.reference.data.build_dataset", lambda *a, **k: None)
    _stand_in(monkeypatch, "foclip_train.reference.select.select_recipe")
    got = _captured(["reference", "select", "--work", str(tmp_path), "--candidates", "a, b"])
    assert got.args_[3] == ["a", "b"]


# ----------------------------------------------------------------------------- data
def test_data_wild_sizes_reach_the_corpus_builder_and_are_range_checked(monkeypatch, tmp_path, capsys):
    _stand_in(monkeypatch, "foclip_train.wild_corpus.build_corpus")
    got = _captured(["data", "wild", "--out", str(tmp_path / "c"), "--screenshots", "3", "--max-side", "64"]).kwargs
    assert (got["screenshots"], got["max_side"]) == (3, 64)
    assert main(["data", "wild", "--out", str(tmp_path / "c"), "--screenshots", "-1"]) == 1
    assert main(["data", "wild", "--out", str(tmp_path / "c"), "--max-side", "8"]) == 1
    err = capsys.readouterr().err
    assert "--screenshots -1 | is out of range" in err and "--max-side 8 | is out of range" in err


# ----------------------------------------------------------------------------- detect --ray
def test_detect_ray_image_column_reaches_the_shard_reader(tiny_bundle, sample_photo_dir, monkeypatch, tmp_path):
    _stand_in(monkeypatch, "foclip.batch.scan.scan")  # stands for Ray and its actors
    got = _captured(["detect", str(tiny_bundle), str(sample_photo_dir), "--ray", "--image-column", "jpeg_bytes",
                     "--out", str(tmp_path / "scan")])
    assert got.args_[0].read.image_column == "jpeg_bytes"
