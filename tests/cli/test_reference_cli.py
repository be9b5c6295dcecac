"""Tests of `foclip reference build` argument handling and of the demo's reference defaults."""

from __future__ import annotations

from foclip.cli.main import build_parser, main


def test_demo_defaults_to_the_reference_model():
    args = build_parser().parse_args(["demo"])
    assert (args.model, args.pretrained, args.prompts) == ("foclip-ref-vit", "reference", None)
    args = build_parser().parse_args(["demo", "--pretrained", "random", "--model", "foclip-tiny"])
    assert args.pretrained == "random"


def test_reference_build_parses_and_refuses_bad_epochs(capsys, tmp_path):
    args = build_parser().parse_args(["reference", "build", "--model", "all", "--work", str(tmp_path)])
    assert args.model == "all" and args.seed == 0 and not args.install
    assert main(["reference", "build", "--epochs", "0", "--work", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--epochs 0 | is out of range" in err and err.count("\n") == 1


def test_reference_build_summary_names_both_zero_shot_classifiers(capsys, tmp_path, monkeypatch):
    import json

    from foclip.models.loader import REFERENCE_DIR
    from foclip_train.reference import build

    card = json.loads((REFERENCE_DIR / "foclip-ref-rn.json").read_text())
    monkeypatch.setattr(build, "run_build", lambda *a, **k: card)
    assert main(["reference", "build", "--model", "foclip-ref-rn", "--work", str(tmp_path),
                 "--out", str(tmp_path / "out")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    h = card["heldout"]
    assert f"zero-shot top-1 {h['zero_shot_top1']:.1f} %" in out
    assert f"caption ensemble {h['ensemble_top1']:.1f} % / balanced {h['ensemble_balanced']:.1f} %" in out


def test_reference_select_table_shows_both_classifiers(capsys, tmp_path, monkeypatch):
    from foclip_train.reference import data, select

    m = {"zero_shot_top1": 13.9, "zero_shot_balanced": 16.2, "ensemble_top1": 22.1, "ensemble_balanced": 15.2,
         "zero_shot_chance": 4.8, "i2t_r1": 24.5, "i2t_r5": 38.2}
    rows = [{"candidate": "shipped", "fit": 10, "val": 2, "val_metrics": m, "train_wall_s_this_call": 1.0},
            {"candidate": "old", "fit": 10, "val": 2, "train_wall_s_this_call": 2.0,
             "val_metrics": {**m, "ensemble_top1": None, "ensemble_balanced": None}}]
    monkeypatch.setattr(data, "build_dataset", lambda *a, **k: None)
    monkeypatch.setattr(select, "select_recipe", lambda *a, **k: rows)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["reference", "select", "--work", str(tmp_path)]) == 0
    lines = [" ".join(ln.replace("│", " ").split()) for ln in capsys.readouterr().out.splitlines()]
    assert "shipped 22.1 15.2 13.9 16.2 4.8 24.5 38.2 1" in lines
    assert "old - - 13.9 16.2 4.8 24.5 38.2 2" in lines
