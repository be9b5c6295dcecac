"""Table 2 of `foclip reproduce`: grayscale drop of originals vs manipulated images (figure: drops.png)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from foclip.plots import integer_counts, pyplot, save_figure
from foclip_train.sections.base import PAPER, RecordsBySet, Section, mean, ok_records, pct, who


def per_set_and_all(by_set: RecordsBySet,
                     row: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per prompt set from its usable records, then one over every set pooled."""
    rows, every = [], []
    for name, recs in by_set.items():
        ok = ok_records(recs)
        every += ok
        rows.append({"prompt_set": name, **row(ok)})
    return [*rows, {"prompt_set": "all sets", **row(every)}]


def _drop_row(ok: list[dict[str, Any]]) -> dict[str, Any]:
    return {"images": len(ok), "mean_drop_orig": mean([r["drop_orig"] for r in ok]),
            "mean_drop_adv": mean([r["drop_adv"] for r in ok]),
            "median_drop_orig": statistics.median([r["drop_orig"] for r in ok]) if ok else None,
            "median_drop_adv": statistics.median([r["drop_adv"] for r in ok]) if ok else None}


def table2_compute(by_set: RecordsBySet, cfg: Any,
                   ctx: Any = None) -> dict[str, Any]:
    """Table 2: grayscale drop of originals vs manipulated images, per set and over all sets."""
    return {"rows": per_set_and_all(by_set, _drop_row), "paper_drop_orig": PAPER["drop_original"],
            "paper_drop_adv": PAPER["drop_manipulated"]}


def table2_markdown(res: dict[str, Any], cfg: Any) -> str:
    """Table 2 as markdown (drops shown in percent)."""
    p = f"{res['paper_drop_orig'] * 100:.1f} % / {res['paper_drop_adv'] * 100:.1f} %"
    lines = ["Grayscale drop = (score - score_gray) / score; gray = luma 0.299 R + 0.587 G + 0.114 B.", "",
             ("| prompt set | images | originals: mean (median) | manipulated: mean (median) | "
             "paper: originals / manipulated |"), "|---|---|---|---|---|"]
    pc = lambda v: pct(None if v is None else v * 100)
    for r in res["rows"]:
        lines.append(f"| {r['prompt_set']} | {r['images']} | {pc(r['mean_drop_orig'])} ({pc(r['median_drop_orig'])}) "
                     f"| {pc(r['mean_drop_adv'])} ({pc(r['median_drop_adv'])}) | {p} |")
    return "\n".join(lines)


def table2_figures(figs: Path, res: dict[str, Any], report: dict[str, Any], cfg: Any, ctx: Any) -> list[Path]:
    """drops.png: histograms of the drop of originals and FoCLIP images over every prompt set."""
    plt = pyplot()
    w = who(report)
    every = [r for recs in ctx.by_set.values() for r in ok_records(recs)]
    fig, ax = plt.subplots(figsize=(6, 4))
    do = np.array([r["drop_orig"] for r in every])
    dm = np.array([r["drop_adv"] for r in every])
    # Bins over the 1st-99th percentile range, so one outlier does not squash the rest (issue 13, item 9).
    both = np.concatenate([do, dm])
    lo, hi = np.percentile(both, [1, 99]) if len(both) > 10 else (both.min(), both.max())
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 30)
    ax.hist(np.clip(do, lo, hi), bins=bins, alpha=0.6, label=f"original (n={len(do)}, mean {do.mean():.1%})")
    ax.hist(np.clip(dm, lo, hi), bins=bins, alpha=0.6, label=f"FoCLIP (n={len(dm)}, mean {dm.mean():.1%})")
    ax.axvline(0.085, color="C0", ls="--", lw=1, label="paper: original 8.5 %")
    ax.axvline(0.632, color="C1", ls="--", lw=1, label="paper: FoCLIP 63.2 %")
    ax.set_xlabel("grayscale drop (fraction; values outside the 1-99 % range drawn at the edges)")
    ax.set_ylabel("images (all prompt sets)")
    integer_counts(ax)
    ax.set_title(f"grayscale drop of originals and FoCLIP images, all prompt sets\n{w}", fontsize=9)
    ax.legend(fontsize=7)
    return [save_figure(plt, fig, figs / "drops.png")]



SECTION = Section("table2", "Table 2: grayscale drop, originals vs manipulated", table2_compute, table2_markdown,
                  table2_figures)
