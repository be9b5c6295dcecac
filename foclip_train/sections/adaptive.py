"""Open question 1 of `foclip reproduce`: an attacker who knows the detector (figure: adaptive.png).

Numbers: :func:`foclip_train.questions.adaptive_compute` (adaptive attacks under ``OUT/adaptive/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from foclip.plots import pyplot, save_figure
from foclip_train import questions
from foclip_train.sections.base import Section, who


def adaptive_figure(plt: Any, figs: Path, res: dict[str, Any], who: str) -> Path:
    """adaptive.png: threshold-free drop AUC of each detector against each attack (grouped bars)."""
    dets = list(dict.fromkeys(r["detector"] for r in res["rows"]))
    attacks = list(dict.fromkeys(r["attack"] for r in res["rows"]))
    auc = {(r["detector"], r["attack"]): r["auc_drop"] for r in res["rows"]}
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = np.arange(len(attacks))
    width = 0.8 / max(len(dets), 1)
    for i, d in enumerate(dets):
        values = [auc.get((d, a), np.nan) for a in attacks]
        bars = ax.bar(xs + (i - (len(dets) - 1) / 2) * width, values, width, label=d)
        # Every bar carries its value: an AUC of 0 (the attack fully evades) is otherwise no bar at all.
        ax.bar_label(bars, labels=["n/a" if np.isnan(v) else f"{v:.2f}" for v in values], fontsize=6, padding=1)
    ax.axhline(0.5, color="gray", ls=":", lw=1)
    ax.set_xticks(xs, attacks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("ROC-AUC of the drop statistic")
    ax.set_title(f"ROC-AUC of each detector (bars) against each attack, {res['prompt_set']} "
                 f"({res['images']} images)\n{who}", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(plt, fig, figs / "adaptive.png")


def adaptive_figures(figs: Path, res: dict[str, Any], report: dict[str, Any], cfg: Any, ctx: Any) -> list[Path]:
    """adaptive.png when the section has rows."""
    return [adaptive_figure(pyplot(), figs, res, who(report))] if "rows" in res else []


SECTION = Section("adaptive", "Open question 1: an attacker who knows the detector (adaptive attacks, multi-probe "
                  "detector)", questions.adaptive_compute, questions.adaptive_markdown, adaptive_figures,
                  reads=("adaptive",))
