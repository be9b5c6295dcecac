"""`foclip reproduce`'s open-question sections (adaptive, transfer, spectral) on the tiny random model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from foclip.errors import InputError
from foclip.runtime.stats import roc_auc
from foclip.scoring import PROBES, drop
from foclip_train.config import AttackConfig
from foclip_train.generate import latest_records
from foclip_train.questions import probe_drop, select_probes
from foclip_train.reproduce import ReproduceConfig, run_reproduce

SETS = ("masterpieces", "imagenet-25")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """foclip-tiny with other random weights, as a checkpoint file: a second 'model' for transfer."""
    import torch

    from foclip.models import load_clip

    path = tmp_path_factory.mktemp("ckpt") / "tiny-seed1.pt"
    torch.save(load_clip("foclip-tiny", "random", seed=1).model.state_dict(), path)
    return str(path)


def _cfg(tiny_ckpt: str, **kw) -> ReproduceConfig:
    base = {"model": "foclip-tiny", "pretrained": "random", "max_images": 4, "prompt_sets": SETS, "batch": 4, "folds": 2,
                "attack": AttackConfig(iters=4, space="model", output="model"), "extra_images": 3,
                "sections": ("table1", "adaptive", "transfer", "spectral"),
                "transfer_models": (("foclip-tiny", "random"), ("foclip-tiny", tiny_ckpt), ("foclip-ref-rn", "nope.pt"))}
    base.update(kw)
    return ReproduceConfig(**base)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_ckpt):
    out = tmp_path_factory.mktemp("sections") / "rep"
    cfg = _cfg(tiny_ckpt)
    return out, cfg, run_reproduce(cfg, out)


def test_probe_drop_is_the_largest_drop_over_the_chosen_probes():
    names = ["gray", "hue90", "swap-rb"]
    scores = np.array([[10.0, 8.0, 5.0, 9.0], [4.0, 1.0, 3.0, 4.0], [0.0, 1.0, 1.0, 1.0]])
    assert np.allclose(probe_drop(scores, names, ["gray"]), [0.2, 0.75, 0.0])
    assert np.allclose(probe_drop(scores, names, ["gray", "hue90", "swap-rb"]), [0.5, 0.75, 0.0])
    assert np.allclose(probe_drop(scores, names, ["swap-rb"]), [0.1, 0.0, 0.0])


def test_select_probes_ranks_by_single_probe_auc():
    names = ["gray", "hue90", "swap-rb"]
    orig = np.array([[10.0, 9.0, 9.0, 9.0], [10.0, 9.5, 8.0, 9.0], [10.0, 9.0, 9.5, 9.0]])
    man = np.array([[10.0, 9.2, 2.0, 9.0], [10.0, 8.5, 1.0, 9.0], [10.0, 8.0, 3.0, 9.0]])
    chosen, aucs, sep = select_probes(orig, man, names, 2)
    assert chosen == ["hue90", "gray"]
    assert sep["hue90"] > sep["gray"] > 0 and sep["swap-rb"] == 0
    assert aucs["hue90"] == 1.0 and aucs["gray"] == pytest.approx(7 / 9) and aucs["swap-rb"] == 0.5


def test_adaptive_section_compares_three_attacks_under_two_detectors(run):
    out, _, report = run
    res = report["sections"]["adaptive"]
    assert res["prompt_set"] == "masterpieces" and res["images"] == 3
    # Probes chosen on the other prompt set's plain attack, as the top-3 single-probe AUCs.
    assert res["selection"]["on"].startswith("the other prompt sets")
    aucs = res["selection"]["auc_drop_per_probe"]
    assert set(aucs) == set(PROBES)
    d = res["selection"]["cohens_d_per_probe"]
    assert sorted(aucs, key=lambda q: (-aucs[q], -d[q]))[:3] == res["multi_probes"]
    rows = {(r["detector"].split(" ")[0], r["attack"]): r for r in res["rows"]}
    assert set(rows) == {(d, a) for d in ("gray", "multi-probe") for a in ("plain", "adaptive-gray", "adaptive-multi")}
    # The adaptive attacks went through run_generate with the probes in their manifests.
    for probes in (["gray"], res["multi_probes"]):
        folder = out / "adaptive" / f"masterpieces-{'+'.join(probes)}-w1"
        recs = list(latest_records(folder).values())
        assert len(recs) == 3 and all(r["adaptive"] == probes and not r["error"] for r in recs)
    # The probe scorer agrees with the manifest's gray drops (same decode, same grayscale).
    plain = sorted((r for r in latest_records(out / "sets" / "masterpieces").values()), key=lambda r: r["name"])[:3]
    do = np.array([r["drop_orig"] for r in plain])
    dm = np.array([r["drop_adv"] for r in plain])
    assert rows[("gray", "plain")]["auc_drop"] == pytest.approx(roc_auc(dm, do))
    assert rows[("gray", "plain")]["mean_drop_adv"] == pytest.approx(dm.mean(), abs=1e-5)
    # The multi-probe statistic is never below the grayscale one on the same images.
    assert rows[("multi-probe", "plain")]["mean_drop_adv"] >= rows[("gray", "plain")]["mean_drop_adv"] - 1e-9
    assert "tpr_plain_thresholds" in rows[("gray", "adaptive-gray")]
    md = (out / "REPORT.md").read_text()
    assert "Open question 1" in md and "| gray rule | adaptive-gray | 3 |" in md


def test_transfer_section_scores_every_pair_and_skips_what_cannot_load(run, tiny_ckpt):
    out, _, report = run
    res = report["sections"]["transfer"]
    assert [s["model"] for s in res["skipped"]] == ["foclip-ref-rn"] and "nope.pt" in res["skipped"][0]["reason"]
    assert res["models"] == ["foclip-tiny/random", f"foclip-tiny/{tiny_ckpt}"]
    cells = {(r["source"], r["target"]): r for r in res["rows"]}
    assert len(cells) == 4 and all(r["images"] == 3 for r in cells.values())
    # The main model's own attack is reused: its diagonal cell is the manifest's numbers.
    plain = sorted(latest_records(out / "sets" / "masterpieces").values(), key=lambda r: r["name"])[:3]
    own = cells[("foclip-tiny/random", "foclip-tiny/random")]
    assert own["mean_score_adv"] == pytest.approx(np.mean([r["score_adv"] for r in plain]), rel=1e-5)
    # The checkpoint model's attack has its own folder with its model in the manifest.
    src = [r for r in (out / "transfer").rglob("manifest.jsonl")]
    assert len(src) == 1
    recs = list(latest_records(src[0].parent).values())
    assert {r["pretrained"] for r in recs} == {"tiny-seed1.pt"} and len(recs) == 3
    # Each model's attack raises its own score (the seed-1 model scores the originals 0, so its
    # improvement % is undefined and reported as None).
    other = cells[(f"foclip-tiny/{tiny_ckpt}", f"foclip-tiny/{tiny_ckpt}")]
    assert own["improvement_of_means_pct"] > 100
    assert other["mean_score_adv"] > other["mean_score_orig"]
    assert "not run: `foclip-ref-rn`" in (out / "REPORT.md").read_text()


def test_spectral_section_splits_the_perturbation_and_compares_detectors(run):
    out, _, report = run
    res = report["sections"]["spectral"]
    attacks = [r["attack"] for r in res["rows"]]
    assert attacks[0] == "plain" and len(attacks) == 3  # plus the two adaptive attacks
    for r in res["rows"]:
        sp = r["spectrum"]
        assert sum(sp["channel_share"].values()) == pytest.approx(1.0)
        for c in ("Y", "Cb", "Cr"):
            assert sum(sp["band_share"][c]) == pytest.approx(1.0)
        assert sp["rms_delta"] > 0
        assert set(r["detector_auc"]) == {"chroma_hf", "luma_hf", "gray drop"}
    plain = [r for r in latest_records(out / "sets" / "masterpieces").values() if not r["error"]]
    assert res["rows"][0]["images"] == len(plain) == 4
    assert res["rows"][0]["detector_auc"]["gray drop"] == pytest.approx(
        roc_auc(np.array([r["drop_adv"] for r in plain]), np.array([r["drop_orig"] for r in plain])))
    figs = set(report["figures"])
    assert {"spectrum.png", "adaptive.png"} <= figs and len([f for f in figs if f.startswith("spectrum")]) == 3


def test_rerun_reuses_sections_and_attacks(run, tiny_ckpt):
    out, cfg, report = run
    before = {p.name: p.read_text() for p in (out / "sections").iterdir()}
    manifests = {p: p.read_text() for p in out.rglob("manifest.jsonl")}
    again = run_reproduce(cfg, out, figures=False)
    assert {p.name: p.read_text() for p in (out / "sections").iterdir()} == before
    assert {p: p.read_text() for p in out.rglob("manifest.jsonl")} == manifests
    assert again["sections"]["adaptive"] == report["sections"]["adaptive"]
    # One section chosen: the others' still-valid numbers stay in the report.
    one = run_reproduce(dataclasses.replace(cfg, sections=("table1", "spectral")), out, figures=False)
    assert set(one["sections"]) == set(report["sections"])
    assert "Open question 1" in (out / "REPORT.md").read_text()


def test_only_the_chosen_sections_run_and_only_the_first_set_is_attacked(tmp_path, tiny_ckpt):
    cfg = _cfg(tiny_ckpt, sections=("spectral",), max_images=2)
    report = run_reproduce(cfg, tmp_path / "rep", figures=False)
    assert list(report["sections"]) == ["spectral"]
    assert (tmp_path / "rep" / "sets" / "masterpieces").is_dir()
    assert not (tmp_path / "rep" / "sets" / "imagenet-25").exists()
    md = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "Open question 3" in md and "Table 1" not in md


def test_bad_section_and_transfer_settings_are_one_line(tiny_ckpt):
    with pytest.raises(InputError, match="are not distinct section names"):
        _cfg(tiny_ckpt, sections=("table1", "spectrum"))
    with pytest.raises(InputError, match="model:pretrained pairs"):
        _cfg(tiny_ckpt, transfer_models=(("foclip-tiny", ""),))
    with pytest.raises(InputError, match="extra_images"):
        _cfg(tiny_ckpt, extra_images=1)


def test_drop_helper_matches_scoring():
    # Guard the single-probe case against foclip.scoring.drop itself.
    s = np.array([[5.0, 4.0], [2.0, 3.0]])
    assert np.allclose(probe_drop(s, ["gray"], ["gray"]), drop(s[:, 0], s[:, 1]))


def test_select_probes_breaks_auc_ties_by_separation():
    names = ["gray", "hue90"]
    orig = np.array([[10.0, 9.0, 9.0], [10.0, 9.1, 9.1]])
    man = np.array([[10.0, 8.0, 1.0], [10.0, 7.9, 1.1]])  # both probes separate perfectly; hue90 by far more
    chosen, aucs, _ = select_probes(orig, man, names, 1)
    assert aucs == {"gray": 1.0, "hue90": 1.0} and chosen == ["hue90"]


def test_no_two_train_modules_import_each_other_and_sections_know_no_runner():
    """Issue 35: each section is a module behind the registry; no import cycle, not even inside a function."""
    import ast
    from pathlib import Path

    import foclip_train

    root = Path(foclip_train.__file__).parent
    imports = {}
    for path in root.rglob("*.py"):
        name = ".".join(("foclip_train", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        imports[name] = found
    cycles = [(a, b) for a in imports for b in imports[a] if b in imports and a != b and a in imports[b]]
    assert cycles == []
    for name, found in imports.items():
        if name.startswith("foclip_train.sections.") and not name.endswith("registry"):
            assert not found & {"foclip_train.reproduce", "foclip_train.sections.registry"}, name
    from foclip_train.reproduce import SECTIONS

    assert all(callable(s.run) and callable(s.table) for s in SECTIONS)
