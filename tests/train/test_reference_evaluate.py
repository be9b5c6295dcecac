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
