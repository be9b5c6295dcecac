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
