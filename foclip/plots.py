"""Plots of a calibration and ROC helpers for reports (matplotlib, the ``plots`` extra, imported lazily).

Importing this module does not import matplotlib; drawing does, and a missing matplotlib is one line
naming ``pip install 'foclip[plots]'`` (:func:`pyplot`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from foclip.errors import require
from foclip.manifest import atomic_write_bytes
from foclip.runtime.stats import roc_curve

if TYPE_CHECKING:
    from foclip.runtime.calibration import Calibration


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend.

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'foclip[plots]'``).
    """

    mpl = require("matplotlib", "plots")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt: Any, fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically (temp name, then rename) and close it.

    Args:
        plt: ``matplotlib.pyplot`` (from :func:`pyplot`).
        fig: the figure.
        path: the PNG to write (its folder is created).
        dpi: resolution.

    Returns:
        ``path`` as a Path.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _view(classes: list[np.ndarray], tau: float) -> tuple[float, float] | None:
    """A histogram range outliers cannot squash, or None when no value lies outside it.

    The union of each class's Tukey far fences (3 IQR beyond the quartiles, within its own min and
    max), widened to show tau: one stray image cannot stretch the axis over the threshold region.
    """
    lows, highs = [tau], [tau]
    for v in (c for c in classes if len(c)):
        q1, q3 = np.percentile(v, [25, 75])
        iqr = max(float(q3 - q1), 1e-9)
        lows.append(max(float(v.min()), q1 - 3 * iqr))
        highs.append(min(float(v.max()), q3 + 3 * iqr))
    lo, hi = min(lows), max(highs)
    both = np.concatenate(classes)
    return (lo, hi) if (both < lo).any() or (both > hi).any() else None


def plot_roc_curves(ax: Any, curves: list[tuple[str, np.ndarray, np.ndarray]], bold: str | None = None) -> int:
    """Draw ROC curves on ``ax``; curves that coincide are drawn once, their labels joined.

    Three identical curves drawn on top of each other look like one curve with a three-line legend;
    here they become one line labelled ``a = b = c (identical)``. Remaining curves get distinct line
    styles, so that partial overlaps stay visible.

    Args:
        ax: a matplotlib Axes.
        curves: ``(label, fpr, tpr)`` per curve.
        bold: a label drawn thicker (e.g. the pooled curve).

    Returns:
        The number of lines drawn.
    """
    groups: list[tuple[list[str], np.ndarray, np.ndarray]] = []
    for label, fpr, tpr in curves:
        for names, f, t in groups:
            if len(f) == len(fpr) and np.allclose(f, fpr) and np.allclose(t, tpr):
                names.append(label)
                break
        else:
            groups.append(([label], np.asarray(fpr), np.asarray(tpr)))
    styles = ("-", "--", "-.", ":")
    for i, (names, fpr, tpr) in enumerate(groups):
        label = " = ".join(names) + (" (identical curves)" if len(names) > 1 else "")
        ax.plot(fpr, tpr, styles[i % len(styles)], lw=2.5 if bold in names else 1.5, label=label)
    return len(groups)


def integer_counts(ax: Any) -> None:
    """Integer ticks on a count axis (no "1.75 images")."""
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def save_plots(out_dir: str | os.PathLike[str], score_orig: np.ndarray, drop_orig: np.ndarray,
               score_man: np.ndarray, drop_man: np.ndarray, cal: Calibration, label: str = "") -> list[Path]:
    """ROC curve and per-class histograms of score_color and drop, as PNG (matplotlib, lazy).

    Args:
        out_dir: folder for ``roc.png``, ``hist_score_color.png``, ``hist_drop.png``.
        score_orig: score_color of originals.
        drop_orig: drop of originals.
        score_man: score_color of manipulated images.
        drop_man: drop of manipulated images.
        cal: the calibration (thresholds drawn on the plots).
        label: which model and weights made the scores (a line under each title).

    Returns:
        Paths written.

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'foclip[plots]'``).
    """

    plt = pyplot()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(out / name, buf.getvalue())
        written.append(out / name)

    stat = lambda s, d: np.where(np.asarray(s) >= cal.tau_score, d, -np.inf)
    fig, ax = plt.subplots(figsize=(5, 5))
    plot_roc_curves(ax, [
        (f"drop gated at tau_score (AUC {cal.metrics['roc_auc']:.3f})",
         *roc_curve(stat(score_man, drop_man), stat(score_orig, drop_orig))),
        (f"drop alone (AUC {cal.metrics['roc_auc_drop']:.3f})", *roc_curve(drop_man, drop_orig))])
    ax.plot([0, 1], [0, 1], ":", color="gray", label="chance")
    ax.scatter([cal.metrics["fpr"]], [cal.metrics["tpr"]], color="red", zorder=3, label="chosen thresholds")
    ax.set_xlabel("false-positive rate (originals)")
    ax.set_ylabel("true-positive rate (manipulated)")
    ax.set_title(f"ROC of the grayscale-drop detector: {len(score_man)} manipulated vs {len(score_orig)} "
                 "originals" + (f"\n{label}" if label else ""), fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    save(fig, "roc.png")
    panels = (
        (score_orig, score_man, "hist_score_color.png", f"score_color (0..{cal.score_scale:g})", cal.tau_score),
        (drop_orig, drop_man, "hist_drop.png", "drop (fraction)", cal.tau_drop),
    )
    for o, m, name, xlabel, tau in panels:
        fig, ax = plt.subplots(figsize=(6, 4))
        both = np.concatenate([o, m])
        view = _view([o, m], tau) if len(both) else None
        what = xlabel.split(" (")[0]
        title = f"{what} of originals and manipulated images, with its threshold" + (f"\n{label}" if label else "")
        if view is not None:  # clip the view, not the data: outliers are counted in the edge bins
            n_out = int(((both < view[0]) | (both > view[1])).sum())
            o, m = np.clip(o, *view), np.clip(m, *view)
            title = (title + "\n" if title else "") + f"{n_out} outlier(s) beyond the view, counted in the edge bins"
        bins = np.histogram_bin_edges(np.concatenate([o, m]), bins=30)
        ax.hist(o, bins=bins, alpha=0.6, label=f"original (n={len(o)})")
        ax.hist(m, bins=bins, alpha=0.6, label=f"manipulated (n={len(m)})")
        ax.set_title(title, fontsize=9)
        ax.axvline(tau, color="red", linestyle="--", label=f"threshold {tau:.4g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("images")
        integer_counts(ax)
        ax.legend(fontsize=8)
        save(fig, name)
    return written
