"""The statistics of calibration: ROC/AUC, threshold search, intervals, k-fold (numpy only, torch-free).

Used by :mod:`foclip.runtime.calibration` (which wraps the thresholds into a calibration file) and by
``foclip_train`` (reproduce, the research questions, the wild-corpus study).

Decision rule: ``tampered = score_color >= tau_score and drop >= tau_drop``.

**2-D threshold search.** Candidate ``tau_score`` values are 0 (no score gate) and the midpoints
between consecutive distinct ``score_color`` values of all samples (thinned to at most
``max_score_candidates`` by quantiles). For each candidate:

* ``fpr`` mode: with ``k = floor(target_fpr * n_originals)`` false positives allowed, the
  smallest ``tau_drop`` that flags at most ``k`` originals among those passing the score gate:
  the midpoint between the (k+1)-th largest gated original drop and the next larger drop of any
  gated sample. Among candidates, the highest TPR wins; ties go to the lower FPR, then to the
  lower ``tau_score``. So the FPR on the calibration originals is at most the target; on other
  originals it can be higher (see "Fit set vs held out" below).
* ``max-accuracy`` mode: every midpoint between consecutive gated drops (plus "flag all" and
  "flag none") is tried; the highest accuracy wins, ties to the lower FPR, then lower ``tau_score``.

**ROC.** The detector's statistic at the chosen gate is ``drop`` where
``score_color >= tau_score`` and ``-inf`` elsewhere; ``roc_auc`` is its ROC-AUC (Mann-Whitney,
ties counted half). ``roc_auc_drop`` and ``roc_auc_score`` are the AUCs of ``drop`` and
``score_color`` alone. ``tpr_at_fpr`` reports the TPR the same 2-D search reaches at 1 % and 5 %
FPR on these data.

**Fit set vs held out.** Everything above is measured on the images the thresholds were chosen
on, which flatters the rule: in ``fpr`` mode the FPR on those originals is at most the target by
construction, but on fresh originals it is not (a simulation with 40 originals and a 0.05 target
measured 0.106 on average). :func:`held_out_evaluation` therefore also runs a seeded, stratified
k-fold cross-validation: each fold's images are judged by thresholds chosen on the other folds,
and the pooled out-of-fold counts give TPR, FPR and accuracy with Wilson 95 % intervals and the
pooled out-of-fold ROC-AUC with a seeded bootstrap 95 % interval. :func:`sample_size_warnings` says
when a class is too small for the FPR target to mean anything.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from foclip.errors import InputError

MODES = ("fpr", "max-accuracy")
# Grayscale drop reported by the FoCLIP paper (fraction): manipulated vs original images.
PAPER_DROP = {"manipulated": 0.632, "original": 0.085}


# --------------------------------------------------------------------------- ROC helpers
def _midranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    _, start, counts = np.unique(xs, return_index=True, return_counts=True)
    group_rank = start + (counts + 1) / 2.0  # 1-based mean rank of each tie group
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(group_rank, counts)
    return ranks


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC-AUC = P(positive > negative) + P(tie) / 2 (Mann-Whitney U), without sklearn.

    Args:
        positives: statistic of the positive class (manipulated); ``-inf`` allowed.
        negatives: statistic of the negative class (originals).

    Returns:
        AUC in [0, 1]; NaN when a class is empty.
    """
    pos, neg = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = _midranks(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def roc_curve(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points, flagging ``statistic >= t`` for every distinct t (plus the (0, 0) corner).

    Args:
        positives: statistic of the positive class.
        negatives: statistic of the negative class.

    Returns:
        ``(fpr, tpr)`` arrays from (0, 0) to (1, 1).
    """
    pos, neg = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    tpr = np.array([0.0] + [(pos >= t).mean() for t in thresholds])
    fpr = np.array([0.0] + [(neg >= t).mean() for t in thresholds])
    return fpr, tpr


# --------------------------------------------------------------------------- threshold search
def _midpoints(values: np.ndarray) -> np.ndarray:
    u = np.unique(values)
    return (u[:-1] + u[1:]) / 2.0


def _score_candidates(scores: np.ndarray, limit: int) -> np.ndarray:
    mids = _midpoints(scores)
    if len(mids) > limit:
        mids = np.unique(np.quantile(mids, np.linspace(0, 1, limit)))
    return np.concatenate([[0.0], mids[mids > 0]])


def _drop_for_fpr(gated_orig: np.ndarray, gated_all: np.ndarray, k: int) -> float:
    if len(gated_orig) <= k:
        return float(gated_all.min()) if len(gated_all) else 0.0
    v = np.sort(gated_orig)[::-1][k]
    above = gated_all[gated_all > v]
    return float((v + above.min()) / 2.0) if len(above) else float(np.nextafter(v, np.inf))


def search_thresholds(score_orig: np.ndarray, drop_orig: np.ndarray, score_man: np.ndarray,
                      drop_man: np.ndarray, target_fpr: float = 0.05, mode: str = "fpr",
                      max_score_candidates: int = 256) -> tuple[float, float]:
    """The 2-D threshold search described in this module's docstring.

    Args:
        score_orig: score_color of originals.
        drop_orig: drop of originals.
        score_man: score_color of manipulated images.
        drop_man: drop of manipulated images.
        target_fpr: allowed FPR on originals (``fpr`` mode).
        mode: ``fpr`` or ``max-accuracy``.
        max_score_candidates: cap on tau_score candidates.

    Returns:
        ``(tau_score, tau_drop)``.

    Raises:
        InputError: empty classes, unknown mode, target_fpr outside [0, 1).
    """
    so, do, sm, dm = (np.asarray(a, np.float64) for a in (score_orig, drop_orig, score_man, drop_man))
    if len(so) == 0 or len(sm) == 0:
        raise InputError("calibration data", f"has {len(so)} originals and {len(sm)} manipulated images",
                         "at least one readable image of each class")
    if mode not in MODES:
        raise InputError("mode", f"is {mode!r}", f"one of {', '.join(MODES)}")
    if not 0.0 <= target_fpr < 1.0:
        raise InputError("target_fpr", f"is {target_fpr}", "a fraction in [0, 1), e.g. 0.05")
    s_all, d_all = np.concatenate([so, sm]), np.concatenate([do, dm])
    k = int(np.floor(target_fpr * len(so) + 1e-9))
    best: tuple[Any, ...] | None = None
    for ts in _score_candidates(s_all, max_score_candidates):
        g_o, g_all = do[so >= ts], d_all[s_all >= ts]
        g_m = dm[sm >= ts]
        if mode == "fpr":
            td_list = [_drop_for_fpr(g_o, g_all, k)]
        else:
            mids = _midpoints(g_all)
            lo = g_all.min() if len(g_all) else 0.0
            hi = np.nextafter(g_all.max(), np.inf) if len(g_all) else 0.0
            td_list = np.concatenate([[lo], mids, [hi]])
        td_arr = np.asarray(td_list, np.float64)
        g_m_sorted, g_o_sorted = np.sort(g_m), np.sort(g_o)
        tp = len(g_m) - np.searchsorted(g_m_sorted, td_arr, side="left")
        fp = len(g_o) - np.searchsorted(g_o_sorted, td_arr, side="left")
        tpr, fpr = tp / len(sm), fp / len(so)
        acc = (tp + len(so) - fp) / (len(so) + len(sm))
        primary = tpr if mode == "fpr" else acc
        i = int(np.lexsort((fpr, -primary))[0])  # best primary, then lowest fpr
        key = (float(primary[i]), -float(fpr[i]), -float(ts))
        if best is None or key > best[0]:
            best = (key, float(ts), float(td_arr[i]))
    assert best is not None
    return best[1], best[2]


def evaluate(score_orig: np.ndarray, drop_orig: np.ndarray, score_man: np.ndarray, drop_man: np.ndarray,
             tau_score: float, tau_drop: float) -> dict[str, Any]:
    """Metrics of the rule at ``(tau_score, tau_drop)`` on labelled scores.

    Returns:
        Dict with counts (tp, fp, tn, fn, n_originals, n_manipulated), tpr, fpr, accuracy, roc_auc
        (gated statistic), roc_auc_drop, roc_auc_score, tpr_at_fpr {"0.01", "0.05"}, class means
        of score_color and drop, and the paper's drop figures for comparison.
    """
    so, do, sm, dm = (np.asarray(a, np.float64) for a in (score_orig, drop_orig, score_man, drop_man))
    flag_o = (so >= tau_score) & (do >= tau_drop)
    flag_m = (sm >= tau_score) & (dm >= tau_drop)
    tp, fp = int(flag_m.sum()), int(flag_o.sum())
    stat = lambda s, d: np.where(s >= tau_score, d, -np.inf)
    tpr_at = {}
    for f in (0.01, 0.05):
        ts, td = search_thresholds(so, do, sm, dm, f, "fpr")
        tpr_at[f"{f:.2f}"] = float(((sm >= ts) & (dm >= td)).mean())
    return {
        "n_originals": len(so), "n_manipulated": len(sm),
        "tp": tp, "fp": fp, "tn": len(so) - fp, "fn": len(sm) - tp,
        "tpr": tp / len(sm), "fpr": fp / len(so), "accuracy": (tp + len(so) - fp) / (len(so) + len(sm)),
        "roc_auc": roc_auc(stat(sm, dm), stat(so, do)),
        "roc_auc_drop": roc_auc(dm, do), "roc_auc_score": roc_auc(sm, so),
        "tpr_at_fpr": tpr_at,
        "mean_score_color": {"original": float(so.mean()), "manipulated": float(sm.mean())},
        "mean_drop": {"original": float(do.mean()), "manipulated": float(dm.mean())},
        "paper_mean_drop": dict(PAPER_DROP),
    }


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial rate ``k / n`` (95 % by default).

    Args:
        k: successes.
        n: trials.
        z: normal quantile of the two-sided level.

    Returns:
        ``(low, high)`` in [0, 1]; ``(nan, nan)`` when ``n`` is 0.
    """
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_auc_interval(positives: np.ndarray, negatives: np.ndarray, reps: int = 1000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`roc_auc`, resampling each class on its own.

    Args:
        positives: statistic of the positive class.
        negatives: statistic of the negative class.
        reps: bootstrap resamples.
        seed: seed of the resampling.
        level: two-sided level.

    Returns:
        ``(low, high)``; NaN when a class is empty.
    """
    pos, neg = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    aucs = np.array([roc_auc(pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))])
                     for _ in range(reps)])
    a = (1 - level) / 2
    lo, hi = np.quantile(aucs, [a, 1 - a])
    return float(lo), float(hi)


def _stratified_folds(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index (0..k-1) of each of ``n`` items: a seeded permutation dealt round-robin."""
    folds = np.empty(n, dtype=np.int64)
    folds[rng.permutation(n)] = np.arange(n) % k
    return folds


def held_out_evaluation(score_orig: np.ndarray, drop_orig: np.ndarray, score_man: np.ndarray,
                        drop_man: np.ndarray, target_fpr: float = 0.05, mode: str = "fpr", folds: int = 5,
                        seed: int = 0, reps: int = 1000) -> dict[str, Any]:
    """Judge the threshold search on images it did not see: seeded, stratified k-fold cross-validation.

    Each class is dealt into ``k = min(folds, n_originals, n_manipulated)`` folds after a seeded
    shuffle. For each fold, :func:`search_thresholds` runs on the other folds and its thresholds
    flag the fold's images; the out-of-fold flags are pooled into TPR, FPR and accuracy (each with a
    Wilson 95 % interval), and the out-of-fold statistic (drop where ``score_color >= tau_score``
    of that fold's thresholds, ``-inf`` elsewhere) into a ROC-AUC with a bootstrap 95 % interval.

    Args:
        score_orig: score_color of originals.
        drop_orig: drop of originals.
        score_man: score_color of manipulated images.
        drop_man: drop of manipulated images.
        target_fpr: FPR target of the search (``fpr`` mode).
        mode: ``fpr`` or ``max-accuracy``.
        folds: k asked for (at least 2).
        seed: seed of the fold assignment and the bootstrap.
        reps: bootstrap resamples of the AUC.

    Returns:
        ``{"method", "folds", "seed", "n_originals", "n_manipulated", "tp", "fp", "tn", "fn", "tpr",
        "fpr", "accuracy", "roc_auc", "ci95": {"tpr", "fpr", "accuracy", "roc_auc"},
        "tau_score_range", "tau_drop_range"}``, or ``{"skipped": reason}`` when a class has fewer
        than 2 images or ``folds < 2``.
    """
    so, do, sm, dm = (np.asarray(a, np.float64) for a in (score_orig, drop_orig, score_man, drop_man))
    k = min(int(folds), len(so), len(sm))
    if folds < 2:
        return {"skipped": f"folds={folds}: held-out evaluation off"}
    if k < 2:
        return {"skipped": f"{len(so)} originals and {len(sm)} manipulated images: "
                           "each class needs at least 2 for a held-out evaluation"}
    rng = np.random.default_rng(seed)
    fo, fm = _stratified_folds(len(so), k, rng), _stratified_folds(len(sm), k, rng)
    flag_o, flag_m = np.zeros(len(so), bool), np.zeros(len(sm), bool)
    stat_o, stat_m = np.empty(len(so)), np.empty(len(sm))
    taus = []
    for f in range(k):
        to, tm = fo != f, fm != f
        ts, td = search_thresholds(so[to], do[to], sm[tm], dm[tm], target_fpr, mode)
        taus.append((ts, td))
        for held, s, d, flag, stat in ((fo == f, so, do, flag_o, stat_o), (fm == f, sm, dm, flag_m, stat_m)):
            flag[held] = (s[held] >= ts) & (d[held] >= td)
            stat[held] = np.where(s[held] >= ts, d[held], -np.inf)
    tp, fp = int(flag_m.sum()), int(flag_o.sum())
    n_o, n_m = len(so), len(sm)
    correct = tp + n_o - fp
    return {
        "method": f"stratified {k}-fold cross-validation (seed {seed}); pooled out-of-fold counts",
        "folds": k, "seed": seed, "n_originals": n_o, "n_manipulated": n_m,
        "tp": tp, "fp": fp, "tn": n_o - fp, "fn": n_m - tp,
        "tpr": tp / n_m, "fpr": fp / n_o, "accuracy": correct / (n_o + n_m),
        "roc_auc": roc_auc(stat_m, stat_o),
        # Lists, not tuples: the dict round-trips through calibration.json unchanged.
        "ci95": {"tpr": list(wilson_interval(tp, n_m)), "fpr": list(wilson_interval(fp, n_o)),
                 "accuracy": list(wilson_interval(correct, n_o + n_m)),
                 "roc_auc": list(bootstrap_auc_interval(stat_m, stat_o, reps=reps, seed=seed))},
        "ci_method": {"tpr": "Wilson 95 %", "fpr": "Wilson 95 %", "accuracy": "Wilson 95 %",
                      "roc_auc": f"percentile bootstrap 95 %, {reps} resamples per class"},
        "tau_score_range": [min(t[0] for t in taus), max(t[0] for t in taus)],
        "tau_drop_range": [min(t[1] for t in taus), max(t[1] for t in taus)],
    }


def sample_size_warnings(n_originals: int, n_manipulated: int, target_fpr: float, mode: str = "fpr",
                         folds: int = 5) -> list[str]:
    """Warnings for classes too small for the FPR target (issue 13, item 10).

    With ``n`` originals a false-positive rate moves in steps of ``1/n``; below ``ceil(1/target)``
    originals one false positive already exceeds the target, so the search can allow none and
    the target is not what the thresholds deliver. The manipulated class measures TPR in steps of
    ``1/n`` likewise. The k-fold held-out fits see ``(k-1)/k`` of each class, so they need
    ``ceil(k/(k-1) / target)``.

    Args:
        n_originals: scored originals.
        n_manipulated: scored manipulated images.
        target_fpr: the FPR target.
        mode: ``fpr`` (warnings apply) or ``max-accuracy`` (no target: no warning).
        folds: k of the held-out evaluation (< 2: off).

    Returns:
        One line per class that is too small (empty when both are large enough).
    """
    if mode != "fpr" or target_fpr <= 0:
        return []
    need = math.ceil(1 / target_fpr - 1e-9)
    need_cv = math.ceil(folds / (folds - 1) / target_fpr - 1e-9) if folds >= 2 else need
    out = []
    for label, n, what in (("originals", n_originals, "false positive"),
                           ("manipulated", n_manipulated, "missed manipulated image")):
        if n < need:
            step = f"{1 / n:.1%} of them" if n else "undefined"
            cv = f" ({need_cv} for the {folds}-fold held-out figures)" if need_cv > need else ""
            out.append(f"{label}: {n} images cannot resolve a {target_fpr:.1%} FPR target (one {what} is "
                       f"{step}); needs at least {need}{cv}")
        elif n < need_cv:
            out.append(f"{label}: {n} images resolve a {target_fpr:.1%} FPR target, but each {folds}-fold held-out "
                       f"fit sees only about {n * (folds - 1) // folds}; needs at least {need_cv} for the "
                       "held-out figures")
    return out


def threshold_edge_warnings(score_orig: np.ndarray, drop_orig: np.ndarray, score_man: np.ndarray,
                            drop_man: np.ndarray, tau_score: float, tau_drop: float) -> list[str]:
    """Say when a fitted threshold sits at the edge of its range (the rule then degenerates).

    ``tau_score = 0`` is the search's lowest candidate: no score gate, so the rule fires on any
    strongly coloured image whatever its score (issue 23). A ``tau_score`` above every score, or a
    ``tau_drop`` above every gated drop, flags nothing; a ``tau_drop`` at or below every gated drop
    flags every gated image, so the drop plays no part and the rule is a score threshold.

    Args:
        score_orig: score_color of originals.
        drop_orig: drop of originals.
        score_man: score_color of manipulated images.
        drop_man: drop of manipulated images.
        tau_score: the fitted score gate.
        tau_drop: the fitted drop threshold.

    Returns:
        One line per threshold at an edge (empty when both are inside their ranges).
    """
    s = np.concatenate([np.asarray(score_orig, np.float64), np.asarray(score_man, np.float64)])
    d = np.concatenate([np.asarray(drop_orig, np.float64), np.asarray(drop_man, np.float64)])
    out = []
    if tau_score <= 0.0:
        out.append("tau_score is 0 (the lowest candidate): no score gate; the rule flags any image whose drop "
                   f"reaches tau_drop {tau_drop:.4f}, whatever its score")
    elif len(s) and tau_score > s.max():
        out.append(f"tau_score {tau_score:.4f} is above every score ({s.max():.4f}): the rule flags nothing")
    gated = d[s >= tau_score]
    if len(gated) and tau_drop > gated.max():
        out.append(f"tau_drop {tau_drop:.4f} is above every gated drop ({gated.max():.4f}): the rule flags nothing")
    elif len(gated) and tau_drop <= gated.min():
        out.append(f"tau_drop {tau_drop:.4f} is at or below every gated drop ({gated.min():.4f}): every image "
                   f"with score >= tau_score {tau_score:.4f} is flagged; the drop plays no part")
    return out


def clean_group_evaluation(score_orig: np.ndarray, drop_orig: np.ndarray, score_man: np.ndarray,
                           drop_man: np.ndarray, clean_score: np.ndarray, clean_drop: np.ndarray,
                           groups: list[str], tau_score: float, tau_drop: float, target_fpr: float = 0.05,
                           mode: str = "fpr", folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """False-positive rate per group of clean images, at the fitted thresholds and held out.

    The thresholds are fitted on originals + clean images (all negatives) against the manipulated
    ones; the fit-set FPR of a group is in-sample. Held out: the clean images are dealt into
    ``k`` seeded folds; each fold is judged by thresholds searched on the originals, the other
    folds' clean images and the manipulated images.

    Args:
        score_orig: score_color of the labelled originals.
        drop_orig: their drop.
        score_man: score_color of the manipulated images.
        drop_man: their drop.
        clean_score: score_color of the clean images.
        clean_drop: their drop.
        groups: the group of each clean image.
        tau_score: the thresholds fitted on everything.
        tau_drop: see ``tau_score``.
        target_fpr: FPR target of the search.
        mode: ``fpr`` or ``max-accuracy``.
        folds: k (at least 2; fewer clean images than k: one per fold).
        seed: fold seed.

    Returns:
        ``{group: {"n", "fit_fp", "fit_fpr", "fit_ci95", "held_out_fp", "held_out_fpr",
        "held_out_ci95"}}`` (held-out keys absent when there are fewer than 2 clean images or folds < 2).
    """
    cs, cd = np.asarray(clean_score, np.float64), np.asarray(clean_drop, np.float64)
    so, do = np.asarray(score_orig, np.float64), np.asarray(drop_orig, np.float64)
    g = np.asarray(groups)
    fit_flag = (cs >= tau_score) & (cd >= tau_drop)
    k = min(int(folds), len(cs))
    held = None
    if k >= 2:
        fold = _stratified_folds(len(cs), k, np.random.default_rng(seed))
        held = np.zeros(len(cs), bool)
        for f in range(k):
            tr = fold != f
            ts, td = search_thresholds(np.concatenate([so, cs[tr]]), np.concatenate([do, cd[tr]]), score_man,
                                       drop_man, target_fpr, mode)
            held[~tr] = (cs[~tr] >= ts) & (cd[~tr] >= td)
    out: dict[str, Any] = {}
    for name in sorted(set(groups)):
        m = g == name
        n, fp = int(m.sum()), int(fit_flag[m].sum())
        row = {"n": n, "fit_fp": fp, "fit_fpr": fp / n, "fit_ci95": list(wilson_interval(fp, n))}
        if held is not None:
            hf = int(held[m].sum())
            row.update(held_out_fp=hf, held_out_fpr=hf / n, held_out_ci95=list(wilson_interval(hf, n)))
        out[name] = row
    return out
