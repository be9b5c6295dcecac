"""`foclip reproduce` with the tiny random model: report folder, tables, hashes, resume, refusals."""

from __future__ import annotations

import json

import pytest

from foclip.cli.main import main
from foclip.prompts import load_prompt_set

SETS = "masterpieces,imagenet-25"
ARGS = ["--model", "foclip-tiny", "--pretrained", "random", "--prompt-sets", SETS, "--iters", "4",
        "--max-images", "4", "--batch", "4", "--folds", "2", "--sections", "table1,table2,table3"]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "rep"
    assert main(["reproduce", "--out", str(out), *ARGS]) == 0
    return out


def test_report_folder_holds_tables_numbers_and_figures(report_dir):
    md = (report_dir / "REPORT.md").read_text()
    for heading in ("## Table 1", "## Table 2", "## Table 3"):
        assert heading in md
    assert "+42.7 %" in md and "+27.3 %" in md and "8.5 % / 63.2 %" in md and "91%" in md
    assert "random weights" in md
    rep = json.loads((report_dir / "report.json").read_text())
    t1 = {r["prompt_set"]: r for r in rep["sections"]["table1"]["rows"]}
    assert set(t1) == {"masterpieces", "imagenet-25"} and all(r["images"] == 4 for r in t1.values())
    for name, row in t1.items():
        assert row["prompt_set_sha256"] == load_prompt_set(name).sha256 == rep["prompt_sets"][name]["sha256"]
        assert row["mean_score_adv"] > row["mean_score_orig"]
    t3 = {r["prompt_set"]: r for r in rep["sections"]["table3"]["rows"]}
    assert t3["all sets"]["held_out"]["folds"] == 2 and t3["all sets"]["fit"]["n_originals"] == 8
    assert sorted(p.name for p in (report_dir / "figures").iterdir()) == [
        "curves.png", "drops.png", "grid.png", "roc.png"]
    assert rep["curves"]["masterpieces"][0][0] == 0 and rep["curves"]["masterpieces"][-1][0] == 4


def test_each_set_manifest_carries_its_prompt_hash(report_dir):
    for name in SETS.split(","):
        lines = [json.loads(ln) for ln in (report_dir / "sets" / name / "manifest.jsonl").read_text().splitlines()]
        assert {ln["prompt_set_sha256"] for ln in lines} == {load_prompt_set(name).sha256}
        assert {ln["space"] for ln in lines} == {"model"}
        # Model-space output: the saved file is the optimised S x S view; the consumer's score of it
        # equals the optimiser's own up to the PIL/torch resize of the input (none here: 64 -> 64).
        assert all(abs(ln["score_adv"] - ln["score_opt"]) < 0.05 * max(ln["score_opt"], 1) for ln in lines)


def test_rerun_skips_finished_work(report_dir, capsys):
    before = {n: (report_dir / "sets" / n / "manifest.jsonl").read_text() for n in SETS.split(",")}
    assert main(["reproduce", "--out", f"{report_dir}/", *ARGS]) == 0  # typed with a trailing slash
    after = {n: (report_dir / "sets" / n / "manifest.jsonl").read_text() for n in SETS.split(",")}
    assert after == before  # no image attacked again
    cap = capsys.readouterr()
    assert "every image already done (resumed)" in cap.err
    out = cap.out.replace("\n", "")
    assert f"wrote {report_dir / 'REPORT.md'}" in out and "//REPORT.md" not in out  # once `wrote report//REPORT.md`


def test_rerun_with_other_settings_is_refused(report_dir, capsys):
    args = [a if a != "4" else "5" for a in ARGS[:ARGS.index("--iters") + 2]] + ARGS[ARGS.index("--iters") + 2:]
    assert main(["reproduce", "--out", str(report_dir), *args]) == 1
    assert "holds a run made with other settings (attack)" in capsys.readouterr().err


def test_bad_prompt_set_is_one_line(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--model", "foclip-tiny", "--pretrained", "random",
                 "--prompt-sets", "masterpieces,masterpieces"]) == 1
    assert "name a set twice" in capsys.readouterr().err


def test_bad_transfer_models_and_sections_are_one_line(tmp_path, capsys):
    base = ["reproduce", "--out", str(tmp_path / "r"), "--model", "foclip-tiny", "--pretrained", "random"]
    assert main([*base, "--transfer-models", "foclip-tiny"]) == 1
    assert "--transfer-models item 'foclip-tiny' | is not model:pretrained" in capsys.readouterr().err
    assert main([*base, "--sections", "table1,spectrum"]) == 1
    assert "are not distinct section names" in capsys.readouterr().err


def test_help_lists_the_new_sections(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = capsys.readouterr().out
    for flag in ("--sections", "--transfer-models", "--adaptive-weight", "--multi-probes", "--extra-images"):
        assert flag in text
    from foclip_train import reproduce

    # The CLI keeps its own copy of the names (fast --help): it must match the library's.
    assert "table1,table2,table3,adaptive,transfer,spectral" in text.replace("\n", "")
    assert reproduce.SECTION_NAMES == tuple(s.name for s in reproduce.SECTIONS)
    from foclip.cli import reproduce as cli

    assert (cli.SECTION_NAMES, cli.DEFAULT_SECTIONS) == (reproduce.SECTION_NAMES, reproduce.DEFAULT_SECTIONS)


def test_images_in_domain_and_budget_reach_the_config(tmp_path, capsys):
    import argparse

    from foclip.cli import reproduce as cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["reproduce", "--out", str(tmp_path / "r"), "--images", "in-domain",
                              "--sections", "in_domain", "--budget-s", "90"])
    cfg = cli.config_from_args(args)
    assert cfg.images == ("in-domain",) and cfg.sections == ("in_domain",) and cfg.budget_s == 90
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--images", "no-such-dir", *ARGS]) == 1
    assert "no-such-dir" in capsys.readouterr().err
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--budget-s", "0", *ARGS]) == 1
    assert "budget_s=0.0 | is out of range" in capsys.readouterr().err
