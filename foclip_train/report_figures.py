"""PNG figures of `foclip reproduce` (matplotlib, imported lazily; ``pip install 'foclip[plots]'``).

Every figure's title names the model and its weights, and says so when they are random.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from foclip.manifest import atomic_write_bytes

GRID_IMAGES = 4


def _save(plt: Any, fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _who(report: dict[str, Any]) -> str:
    tag = f"{report['model']} / {report['pretrained']}"
    return tag + (" (RANDOM weights: mechanics only)" if report["random_init"] else "")


def write_figures(out: Path, cfg: Any, by_set: dict[str, list[dict[str, Any]]], report: dict[str, Any],
                  set_dir: Callable[[Path, str], Path]) -> list[Path]:
    """Write grid.png, roc.png, drops.png, curves.png (and spectrum*.png, adaptive.png) under ``OUT/figures``.

    Figures of sections that were not run are skipped.

    Args:
        out: the report folder.
        cfg: the :class:`foclip_train.reproduce.ReproduceConfig`.
        by_set: latest manifest records per prompt set.
        report: the report dict (sections and curves already filled in).
        set_dir: ``(out, set name) -> generate folder``.

    Returns:
        Paths written.
    """
    import numpy as np
    from PIL import Image

    from foclip.plots import integer_counts, plot_roc_curves, pyplot
    from foclip.runtime.stats import roc_curve
    from foclip.scoring import to_gray

    plt = pyplot()
    figs = out / "figures"
    written = []
    who = _who(report)
    first = cfg.prompt_sets[0]
    ok = [r for r in by_set[first] if not r.get("error")][:GRID_IMAGES]
    if ok:
        fig, axes = plt.subplots(len(ok), 3, figsize=(7.5, 2.6 * len(ok)), squeeze=False)
        for row, r in zip(axes, ok):
            d = set_dir(out, first)
            orig = np.asarray(Image.open(d / r["original"]).convert("RGB"))
            adv = np.asarray(Image.open(d / r["manipulated"]).convert("RGB"))
            gray = to_gray(adv.astype(np.float32) / 255, channel_axis=-1)
            for ax, img, label in ((row[0], orig, f"original  {r['score_orig']:.2f}"),
                                   (row[1], adv, f"FoCLIP  {r['score_adv']:.2f}"),
                                   (row[2], gray, f"FoCLIP gray  {r['score_gray_adv']:.2f}")):
                ax.imshow(img)
                ax.set_title(label, fontsize=8)
                ax.axis("off")
        fig.suptitle(f"{first}: CLIPscore (0..{cfg.attack.score_scale:g})\n{who}", fontsize=9)
        written.append(_save(plt, fig, figs / "grid.png"))

    sections = report["sections"]
    written += _spectral_figures(plt, figs, sections.get("spectral"), who)
    from foclip_train.wild import wild_figures  # one figure per table of the wild section

    written += wild_figures(plt, figs, sections.get("wild"), who)
    if "adaptive" in sections and "rows" in sections["adaptive"]:
        written.append(_adaptive_figure(plt, figs, sections["adaptive"], who))
    if "table3" not in sections:
        return written
    every = [r for recs in by_set.values() for r in recs if not r.get("error")]
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
    ax.set_title(f"ROC of the grayscale-drop detector per prompt set: FoCLIP images vs originals\n{who}",
                 fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    written.append(_save(plt, fig, figs / "roc.png"))

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
    ax.set_title(f"grayscale drop of originals and FoCLIP images, all prompt sets\n{who}", fontsize=9)
    ax.legend(fontsize=7)
    written.append(_save(plt, fig, figs / "drops.png"))

    curves = report.get("curves", {})
    if any(curves.values()):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, pts in curves.items():
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
        ax.set_xlabel("SGD step")
        ax.set_ylabel(f"mean optimiser CLIPscore (0..{cfg.attack.score_scale:g}, 8-bit iterate)")
        ax.set_title(f"score vs step ({cfg.attack.space} space, lr {cfg.attack.lr:g})\n{who}", fontsize=9)
        ax.legend(fontsize=7)
        written.append(_save(plt, fig, figs / "curves.png"))
    return written


def _spectral_figures(plt: Any, figs: Path, res: dict[str, Any] | None, who: str) -> list[Path]:
    """spectrum.png (plain attack) and spectrum-<attack>.png per adaptive attack, via plot_spectrum."""
    import os
    import re
    import tempfile

    from foclip_train.spectral import plot_spectrum

    if not res or "rows" not in res:
        return []
    written = []
    figs.mkdir(parents=True, exist_ok=True)
    for row in res["rows"]:
        tag = "" if row["attack"] == "plain" else "-" + re.sub(r"[^A-Za-z0-9._+-]", "_", row["attack"])
        path = figs / f"spectrum{tag}.png"
        fd, tmp = tempfile.mkstemp(suffix=".png", dir=figs)  # plot_spectrum saves by path: rename when done
        os.close(fd)
        try:
            plot_spectrum(row["spectrum"], tmp, f"perturbation energy, {row['attack']} attack, "
                          f"{res['prompt_set']} ({row['images']} images)\n{who}")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        written.append(path)
    return written


def _adaptive_figure(plt: Any, figs: Path, res: dict[str, Any], who: str) -> Path:
    """adaptive.png: threshold-free drop AUC of each detector against each attack (grouped bars)."""
    import numpy as np

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
    return _save(plt, fig, figs / "adaptive.png")
