"""Held-out metrics of foclip_train/reference/evaluate.py on controlled embeddings."""

from __future__ import annotations

import numpy as np

from foclip_train.reference import evaluate


def test_top1_vs_balanced_on_unbalanced_categories(tmp_path, monkeypatch):
    # 4 "computer" images, 1 "animals", 1 "food"; the model calls every image "computer".
    cats = ["computer"] * 4 + ["animals", "food"]
    lines = ["filepath,caption,source,category"]
    lines += [f"/x/{i}.png,caption {i},openclipart,{c}" for i, c in enumerate(cats)]
    csv = tmp_path / "heldout.csv"
    csv.write_text("\n".join(lines) + "\n")
    order = sorted(set(cats))  # animals, computer, food: the category prompts come first

    def fake_encode(_loaded, rows, texts):
        img = np.tile(np.eye(3)[order.index("computer")], (len(rows), 1))
        txt = np.zeros((len(texts), 3))
        txt[: len(order)] = np.eye(3)
        return img, txt

    monkeypatch.setattr(evaluate, "_encode", fake_encode)
    m = evaluate.evaluate_heldout(object(), csv)
    assert m.n_categories == 3 and m.n_zero_shot == 6
    assert abs(m.zero_shot_top1 - 100 * 4 / 6) < 1e-9 and abs(m.zero_shot_majority - 100 * 4 / 6) < 1e-9
    assert abs(m.zero_shot_balanced - 100 / 3) < 1e-9  # recall 1, 0, 0: the constant guess scores chance


def test_caption_category_reads_the_tail():
    cats = ["signs_and_symbols", "shapes", "food"]
    assert evaluate.caption_category("iraqi flag, a clip art of asia, flags, signs and symbols", cats) == "signs_and_symbols"
    assert evaluate.caption_category("a clip art of shapes", cats) == "shapes"
    assert evaluate.caption_category("lemon wedge, a clip art of fruit, food", cats) == "food"
    assert evaluate.caption_category("food, a clip art of plates, kitchen", cats) is None
    assert evaluate.caption_category("an emoji of aubergine", cats) is None


def test_ensemble_uses_training_captions_and_ignores_other_sources(tmp_path, monkeypatch):
    # Two categories, one image each. The single prompts point the wrong way round; the training
    # captions of each category point the right way, so only the ensemble gets both right.
    (tmp_path / "heldout.csv").write_text(
        "filepath,caption,source,category\n"
        "/x/a.png,cat one a clip art of animals,openclipart,animals\n"
        "/x/f.png,pear a clip art of food,openclipart,food\n")
    (tmp_path / "train.csv").write_text(
        "filepath,caption,source,category\n"
        "/t/1.png,\"dog, a clip art of mammals, animals\",openclipart,animals\n"
        "/t/2.png,a clip art of animals,openclipart,animals\n"
        "/t/3.png,\"plum, a clip art of fruit, food\",openclipart,food\n"
        "/t/4.png,an emoji of food,emoji,emoji\n")
    seen = {}

    def fake_encode(_loaded, rows, texts):
        seen["texts"] = texts
        img = np.eye(2)  # image 0 is "animals"-like, image 1 "food"-like
        txt = np.zeros((len(texts), 2))
        txt[0], txt[1] = np.eye(2)[1], np.eye(2)[0]  # prompts swapped: animals -> food direction
        for i, t in enumerate(texts[2:], start=2):
            txt[i] = np.eye(2)[0] if "animals" in t else np.eye(2)[1]
        return img, txt

    monkeypatch.setattr(evaluate, "_encode", fake_encode)
    m = evaluate.evaluate_heldout(object(), tmp_path / "heldout.csv")
    assert m.zero_shot_top1 == 0.0 and m.ensemble_top1 == 100.0 and m.ensemble_balanced == 100.0
    assert m.n_ensemble_captions == 3  # the emoji caption is not clip art
    assert "an emoji of food" not in seen["texts"]
    # Without a training split next to it (or given), there is no ensemble figure.
    (tmp_path / "train.csv").unlink()
    assert evaluate.evaluate_heldout(object(), tmp_path / "heldout.csv").ensemble_top1 is None
