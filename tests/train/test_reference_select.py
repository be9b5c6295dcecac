"""Recipe selection on a validation split carved from the training split (foclip_train/reference/select.py)."""

from __future__ import annotations

import csv
import json

import pytest

from foclip.errors import InputError
from foclip_train.reference.select import candidates_for, select_recipe, validation_split


def _train_csv(d, n=400):
    d.mkdir(parents=True, exist_ok=True)
    with (d / "train.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "caption", "source", "category"])
        for i in range(n):
            w.writerow([f"/data/images/{i:04x}.png", f"thing {i}, a clip art of shapes", "openclipart", "shapes"])
    (d / "heldout.csv").write_text("filepath,caption,source,category\n/data/images/held.png,x,openclipart,shapes\n")
    return d


def _rows(p):
    with p.open(newline="") as f:
        return list(csv.DictReader(f))


def test_val_split_comes_from_train_only_and_is_stable(tmp_path):
    data = _train_csv(tmp_path / "data")
    counts = validation_split(data, tmp_path / "split")
    fit, val = _rows(tmp_path / "split" / "train.csv"), _rows(tmp_path / "split" / "heldout.csv")
    assert counts == {"fit": len(fit), "val": len(val)} and len(fit) + len(val) == 400
    assert 20 <= len(val) <= 60  # ~10 % by a hash of the file name
    files = {r["filepath"] for r in fit} | {r["filepath"] for r in val}
    assert len(files) == 400 and "/data/images/held.png" not in files  # the held-out split stays out
    assert not {r["filepath"] for r in fit} & {r["filepath"] for r in val}
    validation_split(data, tmp_path / "again")
    assert _rows(tmp_path / "again" / "heldout.csv") == val  # same split on a rerun
    other = validation_split(data, tmp_path / "other", seed=1)
    assert _rows(tmp_path / "other" / "heldout.csv") != val and sum(other.values()) == 400
    with pytest.raises(InputError, match="validation fraction"):
        validation_split(data, tmp_path / "x", fraction=0.9)


def test_finished_candidates_are_not_retrained_and_rows_sort_best_first(tmp_path):
    data = _train_csv(tmp_path / "data")
    work = tmp_path / "select"
    work.mkdir()
    names = list(candidates_for("foclip-ref-rn"))
    assert names[0] == "shipped" and len(names) >= 3
    for name, top1 in zip(names[:2], (12.0, 17.5)):
        row = {"candidate": name, "val_metrics": {"zero_shot_top1": top1}}
        (work / f"foclip-ref-rn-{name}.json").write_text(json.dumps(row))
    rows = select_recipe("foclip-ref-rn", data, work, names[:2])  # would need open_clip_train if it trained
    assert [r["candidate"] for r in rows] == [names[1], names[0]]
    with pytest.raises(InputError, match="candidate 'nope'"):
        select_recipe("foclip-ref-rn", data, work, ["nope"])


def test_rows_without_ensemble_are_measured_again_not_retrained(tmp_path, monkeypatch):
    from foclip_train.reference import select as sel

    data = _train_csv(tmp_path / "data")
    work = tmp_path / "select"
    work.mkdir()
    names = list(candidates_for("foclip-ref-rn"))[:3]
    # 0: old row with weights (measured again); 1: old row without weights (kept); 2: new row.
    for name, m in zip(names, ({"zero_shot_top1": 30.0}, {"zero_shot_top1": 20.0},
                               {"zero_shot_top1": 5.0, "ensemble_top1": 25.0})):
        (work / f"foclip-ref-rn-{name}.json").write_text(json.dumps({"candidate": name, "val_metrics": m}))
    (work / f"foclip-ref-rn-{names[0]}.safetensors").write_bytes(b"w")
    calls = []

    def fake_eval(model, weights, heldout):
        calls.append(weights.name)
        return {"zero_shot_top1": 30.0, "ensemble_top1": 10.0}

    monkeypatch.setattr(sel, "evaluate_file", fake_eval)
    monkeypatch.setattr(sel, "run_trainer", lambda *a, **k: pytest.fail("a finished candidate was retrained"))
    rows = select_recipe("foclip-ref-rn", data, work, names)
    assert calls == [f"foclip-ref-rn-{names[0]}.safetensors"]
    assert json.loads((work / f"foclip-ref-rn-{names[0]}.json").read_text())["val_metrics"]["ensemble_top1"] == 10.0
    # Ranked by the ensemble where it exists (25, 10), the single prompt otherwise (20).
    assert [r["candidate"] for r in rows] == [names[2], names[1], names[0]]
    select_recipe("foclip-ref-rn", data, work, names)
    assert len(calls) == 1  # measured once
