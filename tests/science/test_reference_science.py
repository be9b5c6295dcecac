"""Science checks on the shipped reference CLIPs: they fail if the model, the attack or the detector
statistic regresses. Tiny step counts keep them fast; every threshold comes from a measured value
(docs/reference.md, "Science checks") with a margin, never from what a test "should" show.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from foclip.models.loader import REFERENCE_DIR, REFERENCE_MODELS
from foclip.runtime.stats import roc_auc

ITERS = 20  # FoCLIP steps per photo (the paper uses 1000)

# Measured on the shipped checkpoints (7 sample photos, prompt set `clipart`, 20 steps, lr 7,
# batch 8, CPU), thresholds well inside them; docs/reference.md, "Science checks".
#   foclip-ref-vit: score_orig 10.29, improvement 13.9 %, drop_adv - drop_orig 0.085, AUC 0.633,
#                   drop_adv > drop_orig on 7 of 7 photos.
#   foclip-ref-rn:  score_orig 16.28, improvement 131.7 %, drop_adv - drop_orig 4.56 (one photo,
#                   chelsea, scores 0.55 in colour and ~18 in gray), AUC 0.673, 7 of 7 photos.
FLOORS = {
    # model: (min mean score_orig, min mean improvement %, min drop_adv - drop_orig, min ROC-AUC,
    #         min photos whose drop rises)
    "foclip-ref-vit": (3.0, 5.0, 0.03, 0.55, 6),
    "foclip-ref-rn": (5.0, 30.0, 0.1, 0.55, 6),
}


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    pytest.importorskip("skimage")
    from foclip.cli.demo import write_sample_photos

    d = tmp_path_factory.mktemp("science_photos")
    write_sample_photos(d)
    return d


@pytest.fixture(scope="module", params=REFERENCE_MODELS)
def run(request, photo_dir, tmp_path_factory):
    """Generate a FoCLIP set on the sample photos with a reference model; its per-image records."""
    from foclip_train.config import AttackConfig, GenerateConfig
    from foclip_train.generate import read_records, run_generate

    out = tmp_path_factory.mktemp(request.param)
    cfg = GenerateConfig(model=request.param, pretrained="reference", prompts="clipart",
                         attack=AttackConfig(iters=ITERS, check_every=5), batch=8, device="cpu")
    summary = run_generate([photo_dir], out, cfg)
    return request.param, summary, [r for r in read_records(out) if not r.get("error")]


def test_originals_score_like_a_trained_model(run):
    model, summary, recs = run
    assert len(recs) >= 6 and summary["failures"] == 0
    # Random towers give ~0.1 on this 0-100 scale; a trained model aligns photos with clip-art prompts.
    assert summary["mean_score_orig"] > FLOORS[model][0]


def test_foclip_raises_the_score_clearly(run):
    model, summary, recs = run
    assert summary["mean_improvement_pct"] > FLOORS[model][1]
    assert all(r["score_adv"] >= r["score_orig"] for r in recs)  # best iterate never below the start


def test_gray_drop_of_manipulated_exceeds_originals(run):
    model, summary, recs = run
    assert summary["mean_drop_adv"] - summary["mean_drop_orig"] > FLOORS[model][2]
    # Paired: the same photo loses more to grayscale after FoCLIP than before.
    assert sum(r["drop_adv"] > r["drop_orig"] for r in recs) >= FLOORS[model][4]


def test_drop_separates_manipulated_from_originals(run):
    model, _, recs = run
    auc = roc_auc(np.array([r["drop_adv"] for r in recs]), np.array([r["drop_orig"] for r in recs]))
    assert auc > FLOORS[model][3]


# The zero-shot bar (top-1 >= 3x chance, 4.76 %) is read on the caption-ensemble classifier
# (evaluate.py: each category's text embedding is the mean over its training captions), chosen on
# a validation split before the held-out split was scored with it: on val its top-1 had a standard
# deviation of 0.8 points over 8 RN runs, the single prompt's 3.8. Held-out: RN 22.1 %, ViT 22.1 %
# (4.6x chance).
def _card(model):
    return json.loads((REFERENCE_DIR / f"{model}.json").read_text())["heldout"]


@pytest.mark.parametrize("model", REFERENCE_MODELS)
def test_model_card_meets_the_zero_shot_bar(model):
    h = _card(model)
    assert h["ensemble_top1"] >= 3 * h["zero_shot_chance"]
    assert h["i2t_r1"] > 100 / h["n_captions"] * 5  # well above chance retrieval


# The single prompt `a clip art of <category>` gave the RN 13.9 % (2.92x chance). strict: the
# test reports XPASS, and fails, once a retrained RN clears 3x with the single prompt too.
SINGLE_PROMPT_MISS = {"foclip-ref-rn"}


@pytest.mark.parametrize("model", [
    pytest.param(m, marks=pytest.mark.xfail(strict=True, reason="measured 2.92x chance, below the 3x bar"))
    if m in SINGLE_PROMPT_MISS else m for m in REFERENCE_MODELS])
def test_single_prompt_zero_shot_against_the_bar(model):
    h = _card(model)
    assert h["zero_shot_top1"] >= 3 * h["zero_shot_chance"]
