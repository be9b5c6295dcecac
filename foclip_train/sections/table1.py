"""Table 1 of `foclip reproduce`: CLIPscore before and after FoCLIP, improvement per prompt set.

Figures: ``grid.png`` (originals, FoCLIP images and their gray copies) and ``curves.png`` (mean
optimiser score per step, from each set's ``trace.jsonl``).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from foclip.plots import pyplot, save_figure
from foclip.scoring import to_gray
from foclip_train.sections.base import (
    RecordsBySet,
    Section,
    mean,
    num,
    ok_records,
    paper_improvement,
    pct,
    who,
)

GRID_IMAGES = 4


def table1_compute(by_set: RecordsBySet, cfg: Any,
                   ctx: Any = None) -> dict[str, Any]:
    """Table 1: CLIPscore before and after FoCLIP, improvement %, per prompt set."""
    rows = []
    for name, recs in by_set.items():
        ok = ok_records(recs)
        impr = [r["improvement_pct"] for r in ok if r.get("improvement_pct") is not None]
        paper, note = paper_improvement(name)
        so, sa = mean([r["score_orig"] for r in ok]), mean([r["score_adv"] for r in ok])
        rows.append({
            "prompt_set": name, "prompt_set_sha256": ok[0]["prompt_set_sha256"] if ok else None,
            "prompt_count": ok[0]["prompt_count"] if ok else None, "images": len(ok),
            "failures": len(recs) - len(ok),
            "mean_score_orig": so, "mean_score_adv": sa,
            # Improvement of the mean scores (as a table of means reads) and the mean of per-image ones.
            "improvement_of_means_pct": (sa - so) / so * 100 if so and sa is not None else None,
            "mean_improvement_pct": statistics.fmean(impr) if impr else None,
            "median_improvement_pct": statistics.median(impr) if impr else None,
            "mean_score_opt": mean([r.get("score_opt") for r in ok]),
            "mean_best_step": mean([r.get("best_step") for r in ok]),
            "paper_improvement_pct": paper, "paper_note": note,
        })
    return {"rows": rows, "score_scale": cfg.attack.score_scale}


def table1_markdown(res: dict[str, Any], cfg: Any) -> str:
    """Table 1 as markdown."""
    w = res["score_scale"]
    lines = [(f"CLIPscore on the 0..{w:g} scale (per-pair clamp, mean over the set's prompts), measured on the "
             "saved files as the detector decodes them. Improvement = (after - before) / before."),
             "",
             ("| prompt set | prompts | images | before | after | improvement of means | median per image | "
             "paper |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        paper = pct(r["paper_improvement_pct"], sign=True) if r["paper_improvement_pct"] is not None else "–"
        lines.append(f"| {r['prompt_set']} | {r['prompt_count']} | {r['images']} | {num(r['mean_score_orig'])} | "
                     f"{num(r['mean_score_adv'])} | {pct(r['improvement_of_means_pct'], sign=True)} | "
                     f"{pct(r['median_improvement_pct'], sign=True)} | {paper} ({r['paper_note']}) |")
    return "\n".join(lines)


def table1_figures(figs: Path, res: dict[str, Any], report: dict[str, Any], cfg: Any, ctx: Any) -> list[Path]:
    """grid.png (the first prompt set's first images) and curves.png (score vs step)."""
    plt = pyplot()
    written = []
    first = cfg.prompt_sets[0]
    w = who(report)
    ok = ok_records(ctx.by_set.get(first, []))[:GRID_IMAGES]
    if ok:
        fig, axes = plt.subplots(len(ok), 3, figsize=(7.5, 2.6 * len(ok)), squeeze=False)
        for row, r in zip(axes, ok):
            d = ctx.set_dir(first)
            orig = np.asarray(Image.open(d / r["original"]).convert("RGB"))
            adv = np.asarray(Image.open(d / r["manipulated"]).convert("RGB"))
            gray = to_gray(adv.astype(np.float32) / 255, channel_axis=-1)
            for ax, img, label in ((row[0], orig, f"original  {r['score_orig']:.2f}"),
                                   (row[1], adv, f"FoCLIP  {r['score_adv']:.2f}"),
                                   (row[2], gray, f"FoCLIP gray  {r['score_gray_adv']:.2f}")):
                ax.imshow(img)
                ax.set_title(label, fontsize=8)
                ax.axis("off")
        fig.suptitle(f"{first}: CLIPscore (0..{cfg.attack.score_scale:g})\n{w}", fontsize=9)
        written.append(save_figure(plt, fig, figs / "grid.png"))

    curves = report.get("curves", {})
    if any(curves.values()):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, pts in curves.items():
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
        ax.set_xlabel("SGD step")
        ax.set_ylabel(f"mean optimiser CLIPscore (0..{cfg.attack.score_scale:g}, 8-bit iterate)")
        ax.set_title(f"score vs step ({cfg.attack.space} space, lr {cfg.attack.lr:g})\n{w}", fontsize=9)
        ax.legend(fontsize=7)
        written.append(save_figure(plt, fig, figs / "curves.png"))
    return written


SECTION = Section("table1", "Table 1: CLIPscore before and after FoCLIP", table1_compute, table1_markdown,
                  table1_figures)
