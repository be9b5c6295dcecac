"""The in_domain section of `foclip reproduce` and the held-out split it runs on (mechanics, not figures)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from foclip_train.config import AttackConfig
from foclip_train.reference.data import (
    SHIPPED_HELDOUT,
    BuildConfig,
    Pair,
    materialise_heldout,
    split_of,
    stratified_pick,
    subset_roles,
)
from foclip_train.reproduce import ReproduceConfig, prepare_inputs, run_reproduce
from foclip_train.sections.in_domain import ARMS, IN_DOMAIN_SETS, MATCH_LRS, choose_matched


def _card() -> list[dict[str, str]]:
    with (SHIPPED_HELDOUT / "data_card.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_shipped_subset_is_held_out_stratified_and_carded():
    rows = _card()
    roles = Counter(r["role"] for r in rows)
    assert roles["scored"] == 200 and 30 <= roles["calibration"] <= 40
    for r in rows:
        # The split is the one the shipped reference models were trained with: every image is held out.
        assert split_of(r["key"], BuildConfig()) == "heldout"
        assert Path(r["file"]).name == hashlib.sha1(r["key"].encode()).hexdigest()[:16] + ".png"
        assert hashlib.sha256((SHIPPED_HELDOUT / r["file"]).read_bytes()).hexdigest() == r["sha256"]
        assert r["licence"] in ("public domain (CC0-style dedication)", "SIL Open Font License 1.1")
        assert r["caption"] and r["category"]
    cats = Counter(r["category"] for r in rows if r["role"] == "scored")
    assert cats["emoji"] >= 20 and len(cats) >= 10  # both sources, many categories
    assert sum(p.stat().st_size for p in SHIPPED_HELDOUT.rglob("*.png")) < 2_000_000


def test_stratified_pick_is_proportional_seeded_and_disjoint_roles():
    pool = [Pair("openclipart", f"{c}/{i}.png", "x", c) for c, n in (("a", 60), ("b", 30), ("c", 10))
            for i in range(n)]
    pick = stratified_pick(pool, 20, seed=0)
    assert Counter(p.category for p in pick) == {"a": 12, "b": 6, "c": 2}
    assert [p.key for p in pick] == [p.key for p in stratified_pick(pool, 20, seed=0)]
    assert [p.key for p in pick] != [p.key for p in stratified_pick(pool, 20, seed=1)]
    roles = subset_roles(pool, scored=15, calibration=5)
    assert Counter(roles.values()) == {"scored": 15, "calibration": 5}


def test_heldout_command_falls_back_to_the_shipped_subset(tmp_path):
    res = materialise_heldout(tmp_path / "ho", BuildConfig(clipart_root=tmp_path / "absent"))
    assert res["source"] == "shipped subset" and "absent" in res["missing"]
    assert res["counts"]["scored"] == 200
    assert (tmp_path / "ho" / "data_card.csv").read_bytes() == (SHIPPED_HELDOUT / "data_card.csv").read_bytes()


def test_choose_matched_takes_the_closest_gain_and_prefers_the_larger_lr():
    traj = {7.0: [44.0, 67.0], 1.0: [10.0, 27.0], 0.15: [1.0, 27.0]}
    assert choose_matched(traj, 27.3) == {"lr": 1.0, "steps": 2, "gain_pct": 27.0, "target_pct": 27.3}
    assert choose_matched(traj, 42.7)["lr"] == 7.0


@pytest.fixture(scope="module")
def small_heldout(tmp_path_factory):
    """Four scored and three calibration images of the shipped subset, in the layout of `foclip data heldout`."""
    root = tmp_path_factory.mktemp("heldout")
    for role, n in (("scored", 4), ("calibration", 3)):
        (root / role).mkdir()
        for p in sorted((SHIPPED_HELDOUT / role).glob("*.png"))[:n]:
            shutil.copy(p, root / role / p.name)
    return root


def _cfg(images: Path, **kw) -> ReproduceConfig:
    return ReproduceConfig(model="foclip-tiny", pretrained="random", images=(str(images / "scored"),), batch=4,
                           folds=2, attack=AttackConfig(iters=3, space="model", output="model"),
                           sections=("in_domain",), in_domain_models=(("foclip-tiny", "random"),), **kw)


def test_in_domain_section_runs_both_arms_on_every_set(small_heldout, tmp_path):
    out = tmp_path / "rep"
    report = run_reproduce(_cfg(small_heldout), out, figures=False)
    res = report["sections"]["in_domain"]
    assert not (out / "sets").exists()  # the section needs no plain attack of the run's prompt sets
    assert [(r["arm"], r["prompt_set"]) for r in res["rows"]] == [(a, s) for a in ARMS for s in IN_DOMAIN_SETS]
    for r in res["rows"]:
        assert r["n"] == 4 and r["failures"] == 0
        d = r["detection"]
        for det in ("rule", "score_alone", "drop_alone"):
            assert d[det]["n_originals"] == 4 and len(d[det]["ci95"]["accuracy"]) == 2
        assert 0 <= d["auc_score"]["auc"] <= 1 and len(d["auc_drop"]["ci95"]) == 2
        if r["arm"] == "matched":
            assert r["attack"]["lr"] in MATCH_LRS and 1 <= r["attack"]["steps"] <= 10
            assert r["target_gain_pct"] in (27.3, 42.7)
        else:
            assert r["attack"] == {"lr": 7.0, "steps": 3, "momentum": 0.5}
    parity = res["runtime_int8"]
    assert [(r["arm"], r["prompt_set"]) for r in parity] == [(a, s) for a in ARMS for s in IN_DOMAIN_SETS]
    assert all(r["decisions"] == 8 and r["flips_within_tolerance"] for r in parity)
    cal = json.loads((out / "in-domain" / "foclip-tiny" / "calibration-clipart.json").read_text())
    assert cal["choice"]["calibration_images"] == 3 and len(cal["choice"]["trajectories"]) == len(MATCH_LRS)
    again = run_reproduce(_cfg(small_heldout, budget_s=1e-9), out, figures=False)["sections"]["in_domain"]
    assert again["stopped"] == [] and [r["n"] for r in again["rows"]] == [4] * len(res["rows"])  # resumed, not redone
    md = (out / "REPORT.md").read_text()
    assert "## In domain" in md and "| paper (CLIP ViT-L) |" in md and md.count("| foclip-tiny |") == 12  # six cells, six int8 rows
    assert json.loads((out / "report.json").read_text())["sections"]["in_domain"]["rows"] == json.loads(
        json.dumps(res["rows"]))


def test_in_domain_budget_reports_unfinished_cells_with_their_n(small_heldout, tmp_path):
    res = run_reproduce(_cfg(small_heldout, budget_s=1e-9), tmp_path / "rep", figures=False)["sections"]["in_domain"]
    assert len(res["stopped"]) == 2 * len(IN_DOMAIN_SETS)
    assert not (tmp_path / "rep" / "in-domain" / "foclip-tiny" / "calibration-clipart.json").exists()
    assert all(r["n"] == 0 and "skipped" in r for r in res["rows"])
    assert "Not finished within the budget" in (tmp_path / "rep" / "REPORT.md").read_text()


def test_in_domain_keyword_is_the_shipped_scored_folder(tmp_path):
    assert prepare_inputs(ReproduceConfig(images=("in-domain",)), tmp_path) == [str(SHIPPED_HELDOUT / "scored")]


def test_a_cell_counts_each_scored_image_once_whatever_its_path(tmp_path):
    from foclip_train.generate import append_records
    from foclip_train.sections.in_domain import cell_records

    append_records(tmp_path, [
        {"source": "/clone-a/heldout/scored/a.png", "score_adv": 1.0},
        {"source": "/clone-a/heldout/scored/gone.png", "score_adv": 2.0},  # not among this run's images
        {"source": "/clone-b/heldout/scored/a.png", "score_adv": 3.0},  # the same image from another clone
        {"source": "/clone-b/heldout/scored/b.png", "score_adv": 4.0},
    ])
    recs = cell_records(tmp_path, {"a.png", "b.png", "c.png"})
    assert sorted((r["source"], r["score_adv"]) for r in recs) == [
        ("/clone-b/heldout/scored/a.png", 3.0), ("/clone-b/heldout/scored/b.png", 4.0)]
