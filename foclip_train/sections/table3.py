"""Table 3 of `foclip reproduce`: detection by the gray rule per prompt set, fit set and held out (figure: roc.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from foclip.plots import plot_roc_curves, pyplot, save_figure
from foclip.runtime.stats import (
    evaluate,
    held_out_evaluation,
    roc_curve,
    sample_size_warnings,
    search_thresholds,
)
from foclip_train.sections.base import PAPER, RecordsBySet, Section, ok_records, who
from foclip_train.sections.table2 import per_set_and_all


def _detection(ok: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    so = np.array([r["score_orig"] for r in ok])
    do = np.array([r["drop_orig"] for r in ok])
    sm = np.array([r["score_adv"] for r in ok])
    dm = np.array([r["drop_adv"] for r in ok])
    if len(ok) == 0:
        return {"skipped": "no image"}
    ts, td = search_thresholds(so, do, sm, dm, cfg.target_fpr, "fpr")
    fit = evaluate(so, do, sm, dm, ts, td)
    fit.pop("paper_mean_drop", None)
    held = held_out_evaluation(so, do, sm, dm, cfg.target_fpr, "fpr", cfg.folds, cfg.seed)
    return {"tau_score": ts, "tau_drop": td, "fit": fit, "held_out": held,
            "warnings": sample_size_warnings(len(so), len(sm), cfg.target_fpr, "fpr", cfg.folds)}


def table3_compute(by_set: RecordsBySet, cfg: Any,
                   ctx: Any = None) -> dict[str, Any]:
    """Table 3: detection (score gate + drop threshold) per set and pooled, fit set and held out."""
    rows = per_set_and_all(by_set, lambda ok: _detection(ok, cfg))
    return {"rows": rows, "target_fpr": cfg.target_fpr, "folds": cfg.folds,
            "paper_accuracy": PAPER["detection_accuracy"]}


def table3_markdown(res: dict[str, Any], cfg: Any) -> str:
    """Table 3 as markdown."""
    t = res["target_fpr"]
    lines = [(f"Rule: tampered = score >= tau_score and drop >= tau_drop, thresholds chosen for a {t:.0%} FPR "
             "target (foclip.runtime.stats). Each row: originals vs their manipulated copies, scored "
             "with that set's prompts (\"all sets\" pools them; its rows reuse the same photos once per set, "
             "so they are not independent). Held out: seeded stratified "
             f"{res['folds']}-fold cross-validation, [95 % interval: Wilson for rates, bootstrap for AUC]."),
             "", ("| prompt set | originals / manipulated | accuracy, fit set | accuracy, held out | "
             f"TPR at {t:.0%} FPR target, held out | FPR, held out | ROC-AUC, held out | paper accuracy |"),
             "|---|---|---|---|---|---|---|---|"]
    paper = f"{res['paper_accuracy']:.0%}"
    for r in res["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['prompt_set']} | – | – | – | – | – | – | {paper} |")
            continue
        f, h = r["fit"], r["held_out"]
        n = f"{f['n_originals']} / {f['n_manipulated']}"
        if "skipped" in h:
            lines.append(f"| {r['prompt_set']} | {n} | {f['accuracy']:.1%} | {h['skipped']} | – | – | – | {paper} |")
            continue
        ci = lambda k, fmt="{:.1%}", h=h: (fmt.format(h[k]) + " [" + fmt.format(h["ci95"][k][0]) + ", "
                                           + fmt.format(h["ci95"][k][1]) + "]")
        lines.append(f"| {r['prompt_set']} | {n} | {f['accuracy']:.1%} | {ci('accuracy')} | {ci('tpr')} | "
                     f"{ci('fpr')} | {ci('roc_auc', '{:.3f}')} | {paper} |")
    warns = sorted({w for r in res["rows"] for w in r.get("warnings", [])})
    if warns:
        lines += ["", "Small samples (per row as applicable):"] + [f"- {w}" for w in warns]
    return "\n".join(lines)


def table3_figures(figs: Path, res: dict[str, Any], report: dict[str, Any], cfg: Any, ctx: Any) -> list[Path]:
    """roc.png: ROC of the gray rule (drop behind the fitted score gate) per prompt set and pooled."""
    plt = pyplot()
    w = who(report)
    by_set = ctx.by_set
    every = [r for recs in by_set.values() for r in ok_records(recs)]
    sections = {"table3": res}
    t3 = {r["prompt_set"]: r for r in sections["table3"]["rows"]}
    fig, ax = plt.subplots(figsize=(5, 5))
    curves = []
    for name in list(cfg.prompt_sets) + ["all sets"]:
        recs = every if name == "all sets" else [r for r in by_set[name] if not r.get("error")]
        row = t3.get(name, {})
        if not recs or "tau_score" not in row:
            continue
        stat = lambda s, d, ts=row["tau_score"]: np.where(np.asarray(s) >= ts, d, -np.inf)
        fpr, tpr = roc_curve(stat([r["score_adv"] for r in recs], [r["drop_adv"] for r in recs]),
                             stat([r["score_orig"] for r in recs], [r["drop_orig"] for r in recs]))
        curves.append((f"{name} (fit-set AUC {row['fit']['roc_auc']:.3f})", fpr, tpr))
    bold = next((c[0] for c in curves if c[0].startswith("all sets")), None)
    plot_roc_curves(ax, curves, bold=bold)  # coinciding curves drawn once, labels joined
    ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    ax.set_xlabel("false-positive rate (originals)")
    ax.set_ylabel("true-positive rate (manipulated)")
    ax.set_title(f"ROC of the grayscale-drop detector per prompt set: FoCLIP images vs originals\n{w}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return [save_figure(plt, fig, figs / "roc.png")]



SECTION = Section("table3", "Table 3: detection by grayscale drop", table3_compute, table3_markdown, table3_figures)
