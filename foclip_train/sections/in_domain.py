"""`foclip reproduce --sections in_domain`: the paper's experiment where the reference CLIPs are competent.

The reference CLIPs (64 px, trained on clip art and emoji) barely understand photos, so on photos a
score threshold alone separates FoCLIP images from originals and the grayscale drop has nothing to
add. Their own domain is the place to ask the paper's question: the held-out split of their training
data (never trained on; ``foclip data heldout``), of which a stratified subset ships with foclip
(``--images in-domain``: 200 scored images, and a separate calibration folder beside them).

For each reference model and each prompt set of :data:`IN_DOMAIN_SETS` (the domain's categories,
``clipart``; the paper's ``masterpieces`` and ``imagenet-25``) two attack arms run through
:func:`foclip_train.generate.run_generate` (so the one FoCLIP loop):

* ``paper``: the paper's protocol (lr 7, momentum 0.5, ``cfg.attack.iters`` steps, 1000 by default);
* ``matched``: the same loop with fewer steps and/or a smaller learning rate, chosen on the
  *calibration* images (never scored) so that the mean relative score gain is the paper's for that
  prompt set (+42.7 % masterpieces, +27.3 % ImageNet subsets and the domain set).

Per model, arm and set the section reports the score gain (Table 1), the gray drop of originals and
manipulated images (Table 2) and detection (Table 3): accuracy, TPR and FPR of the gray rule with
cross-fitted thresholds (:func:`foclip.runtime.stats.held_out_evaluation`), and the same for the score
gate alone and the drop alone, plus the threshold-free ROC-AUC of the score alone and of the drop
alone (bootstrap 95 % intervals). The rule's AUC gain over the score alone answers whether the drop
adds anything in this domain. Attack work is bounded by ``cfg.budget_s``: cells not finished are
reported with the n they have.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from foclip.benchmarks.cpu import cpu_info, cpu_line
from foclip.errors import InputError
from foclip.manifest import atomic_write_json
from foclip.runtime.stats import bootstrap_auc_interval, held_out_evaluation, roc_auc
from foclip_train.reference.data import SHIPPED_HELDOUT
from foclip_train.sections.base import PAPER, RecordsBySet, Section, ok_records, pct

__all__ = ["ARMS", "IN_DOMAIN_SETS", "SECTION", "calibration_folder", "choose_matched", "docs_block",
           "heldout_images", "in_domain_table", "run_attacks", "runtime_parity", "target_gain"]

IN_DOMAIN_SETS = ("clipart", "masterpieces", "imagenet-25")
ARMS = ("paper", "matched")
# The matched arm's grid: learning rates (the paper's first) x steps 1..MATCH_STEPS, read off one
# trajectory per learning rate on the calibration images (the best 8-bit iterate after k steps of a
# longer run is the result of a k-step run: same loop, same start).
MATCH_LRS = (7.0, 1.0, 0.15)
MATCH_STEPS = 10
IN_DOMAIN_KEYWORD = "in-domain"


def heldout_images() -> Path:
    """The shipped held-out subset (``scored/`` and ``calibration/``; ``data_card.csv``)."""
    return SHIPPED_HELDOUT


def calibration_folder(inputs: list[str]) -> Path:
    """The calibration images that sit beside the scored folder (``<DIR>/calibration`` for ``<DIR>/scored``).

    Raises:
        InputError: there is no such folder.
    """
    first = Path(inputs[0]) if inputs else Path(".")
    cand = first.parent / "calibration"
    if first.is_dir() and cand.is_dir() and cand.resolve() != first.resolve():
        return cand
    raise InputError(f"images {' '.join(inputs)!r}", "have no calibration folder beside them",
                     "--images in-domain, or the scored/ folder of `foclip data heldout --out DIR`")


def target_gain(prompt_set: str) -> float:
    """The paper's mean score gain (percent) that the matched arm aims at for a prompt set."""
    return PAPER["improvement_pct_masterpieces"] if prompt_set == "masterpieces" else PAPER["improvement_pct_imagenet"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._") or "x"


def _folder(out: Path, model: str, arm: str, prompt_set: str) -> Path:
    return out / "in-domain" / _slug(model) / arm / _slug(prompt_set)


def choose_matched(trajectories: dict[float, list[float]], target: float) -> dict[str, Any]:
    """The (lr, steps) whose mean gain is closest to ``target``; ties go to the larger lr, then fewer steps.

    Args:
        trajectories: lr -> mean relative gain (percent) of the best iterate after step 1, 2, ...
        target: the gain aimed at (percent).

    Returns:
        ``{"lr", "steps", "gain_pct", "target_pct"}``.
    """
    best = min(((abs(g - target), -lr, k + 1, lr, g) for lr, gains in trajectories.items()
                for k, g in enumerate(gains)))
    return {"lr": best[3], "steps": best[2], "gain_pct": best[4], "target_pct": target}


def _calibrate(ctx: Any, cfg: Any, model: str, pretrained: str, prompt_set: str, images: Path,
               measure: bool = True) -> dict[str, Any] | None:
    """Measure the gain-vs-step trajectories on the calibration images and choose the matched arm (cached).

    With ``measure=False`` only a cached choice is returned (None when there is none).
    """
    import torch

    from foclip.models import ImageEncoder
    from foclip_train.attack import foclip_attack
    from foclip_train.generate import collect_inputs, load_image

    path = ctx.out / "in-domain" / _slug(model) / f"calibration-{_slug(prompt_set)}.json"
    key = json.loads(json.dumps({  # as it reads back from the cache file (tuples become lists)
        "lrs": list(MATCH_LRS), "steps": MATCH_STEPS, "images": sorted(p.name for p in collect_inputs([images])),
        "attack": dataclasses.asdict(cfg.attack), "pretrained": pretrained}))
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return cached["choice"]
    if not measure:
        return None
    loaded, bank = ctx.resources(model, pretrained, prompt_set)
    tensors = []
    for p in collect_inputs([images]):
        _, rgb = load_image(p)
        tensors.append(torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).to(bank.device))
    encoder = ImageEncoder(loaded.model, loaded.preprocess).to(bank.device)
    trajectories = {}
    for lr in MATCH_LRS:
        acfg = dataclasses.replace(cfg.attack, lr=lr, iters=MATCH_STEPS, check_every=1)
        seen: dict[int, np.ndarray] = {}
        foclip_attack(tensors, encoder, bank.embeddings, acfg, loaded.preprocess.image_size,
                      loaded.preprocess.interpolation,
                      on_step=lambda step, s, seen=seen: s is not None and seen.__setitem__(step, np.asarray(s)))
        # Gain of the mean scores, as the paper's table reads (an original can score 0 on a
        # foreign prompt set, which leaves its own relative gain undefined).
        base = max(float(seen[0].mean()), 1e-9)
        best, gains = seen[0].copy(), []
        for step in range(1, MATCH_STEPS + 1):
            best = np.maximum(best, seen[step])
            gains.append(float((best.mean() - base) / base * 100))
        trajectories[lr] = gains
    choice = {**choose_matched(trajectories, target_gain(prompt_set)), "calibration_images": len(tensors),
              "trajectories": {str(k): v for k, v in trajectories.items()}}
    atomic_write_json(path, {"key": key, "choice": choice})
    return choice


def _cells(cfg: Any) -> list[tuple[str, str, str, str]]:
    """(model, pretrained, arm, set) in the order they are attacked: every matched arm first (cheap)."""
    return [(m, p, arm, s) for arm in ("matched", "paper") for m, p in cfg.in_domain_models for s in IN_DOMAIN_SETS]


def run_attacks(cfg: Any, ctx: Any, models: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Calibrate the matched arm and run every attack cell (resumable), within ``cfg.budget_s``.

    Args:
        cfg: the :class:`foclip_train.reproduce.ReproduceConfig`.
        ctx: the run's section context.
        models: only these models (a worker per model); None: all of ``cfg.in_domain_models``.

    Returns:
        ``{"matched": {model: {set: choice}}, "stopped": [cells not finished]}``.
    """
    deadline = None if cfg.budget_s is None else time.monotonic() + cfg.budget_s
    calib = calibration_folder(ctx.inputs)
    matched: dict[str, dict[str, Any]] = {}
    stopped = []
    for model, pretrained, arm, prompt_set in _cells(cfg):
        if models is not None and model not in models:
            continue
        late = deadline is not None and time.monotonic() > deadline
        if arm == "matched":
            choice = _calibrate(ctx, cfg, model, pretrained, prompt_set, calib, measure=not late)
            if choice is None:  # past the budget and never calibrated: resumes on the next run
                stopped.append(f"{model} {arm} {prompt_set}")
                continue
            matched.setdefault(model, {})[prompt_set] = choice
            attack = dataclasses.replace(cfg.attack, lr=choice["lr"], iters=choice["steps"])
        else:
            attack = cfg.attack
        gcfg = dataclasses.replace(cfg.generate_config(prompt_set), model=model, pretrained=pretrained, attack=attack)
        folder = _folder(ctx.out, model, arm, prompt_set)
        summary = ctx.generate(ctx.inputs, folder, gcfg, ctx.resources(model, pretrained, prompt_set),
                               f"in-domain {model} {arm} {prompt_set}", deadline=deadline)
        if summary.get("stopped"):
            stopped.append(f"{model} {arm} {prompt_set}")
    return {"matched": matched, "stopped": stopped}


# ------------------------------------------------------------------------------------------ numbers
def _auc(pos: np.ndarray, neg: np.ndarray, seed: int) -> dict[str, Any]:
    lo, hi = bootstrap_auc_interval(pos, neg, seed=seed)
    return {"auc": roc_auc(pos, neg), "ci95": [lo, hi]}


def paired_auc_difference(so: np.ndarray, sm: np.ndarray, do: np.ndarray, dm: np.ndarray, seed: int,
                          reps: int = 1000) -> dict[str, Any]:
    """AUC(drop) - AUC(score) with a 95 % bootstrap interval that resamples images (an original with its attack).

    Returns:
        ``{"diff", "ci95": [low, high]}``: above 0, the drop alone ranks attacks above originals better
        than the score alone does.
    """
    rng = np.random.default_rng(seed)
    n = len(so)
    diffs = []
    for _ in range(reps):
        i = rng.integers(0, n, n)
        diffs.append(roc_auc(dm[i], do[i]) - roc_auc(sm[i], so[i]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": roc_auc(dm, do) - roc_auc(sm, so), "ci95": [float(lo), float(hi)]}


def _rates(h: dict[str, Any]) -> dict[str, Any]:
    if "skipped" in h:
        return {"skipped": h["skipped"]}
    return {k: h[k] for k in ("accuracy", "tpr", "fpr", "roc_auc", "n_originals", "n_manipulated", "ci95")}


def detection(recs: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """Gray rule, score gate alone and drop alone on originals vs their attacks (cross-fitted), and AUCs.

    The score-alone detector is the rule with every drop set equal (the drop threshold cannot
    separate), the drop-alone one the rule with every score equal (the gate passes everything).
    """
    so, do, sm, dm = (np.array([r[k] for r in recs], np.float64)
                      for k in ("score_orig", "drop_orig", "score_adv", "drop_adv"))
    flat = lambda a: np.zeros_like(a)
    ho = lambda *a: _rates(held_out_evaluation(*a, cfg.target_fpr, "fpr", cfg.folds, cfg.seed))
    rule = ho(so, do, sm, dm)
    res = {"rule": rule, "score_alone": ho(so, flat(do), sm, flat(dm)), "drop_alone": ho(flat(so), do, flat(sm), dm),
           "auc_score": _auc(sm, so, cfg.seed), "auc_drop": _auc(dm, do, cfg.seed)}
    res["rule_auc_gain_over_score"] = (rule["roc_auc"] - res["auc_score"]["auc"]) if "roc_auc" in rule else None
    res["drop_minus_score_auc"] = paired_auc_difference(so, sm, do, dm, cfg.seed)
    return res


def _cell_numbers(recs: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    ok = [r for r in ok_records(recs) if r.get("score_adv") is not None]
    if len(ok) < 2:
        return {"n": len(ok), "skipped": "fewer than 2 finished images"}
    so, sa = np.array([r["score_orig"] for r in ok]), np.array([r["score_adv"] for r in ok])
    do, da = np.array([r["drop_orig"] for r in ok]), np.array([r["drop_adv"] for r in ok])
    return {
        "n": len(ok), "failures": len(recs) - len(ok),
        "mean_score_orig": float(so.mean()), "mean_score_adv": float(sa.mean()),
        "gain_of_means_pct": float((sa.mean() - so.mean()) / so.mean() * 100),
        "mean_drop_orig": float(do.mean()), "mean_drop_adv": float(da.mean()),
        "median_drop_orig": float(np.median(do)), "median_drop_adv": float(np.median(da)),
        "mean_best_step": float(np.mean([r.get("best_step") or 0 for r in ok])),
        "wall_s": float(sum(r.get("wall_s") or 0 for r in ok)),
        "detection": detection(ok, cfg),
    }


def in_domain_run(by_set: RecordsBySet, cfg: Any, ctx: Any) -> dict[str, Any]:
    """Run (or resume) every attack cell, then the numbers per model, arm and prompt set."""
    t0 = time.perf_counter()
    done = run_attacks(cfg, ctx)
    names = set(_scored_names(ctx.inputs))
    rows = []
    for model, pretrained, arm, prompt_set in sorted(_cells(cfg), key=lambda c: (c[0], ARMS.index(c[2]))):
        recs = cell_records(_folder(ctx.out, model, arm, prompt_set), names)
        choice = done["matched"].get(model, {}).get(prompt_set, {})
        attack = ({"lr": cfg.attack.lr, "steps": cfg.attack.iters} if arm == "paper"
                  else {"lr": choice.get("lr"), "steps": choice.get("steps")})
        rows.append({"model": model, "pretrained": pretrained, "arm": arm, "prompt_set": prompt_set,
                     "attack": {**attack, "momentum": cfg.attack.momentum},
                     "target_gain_pct": target_gain(prompt_set) if arm == "matched" else None,
                     "calibration_gain_pct": choice.get("gain_pct") if arm == "matched" else None,
                     "paper_gain_pct": target_gain(prompt_set) if prompt_set != "clipart" else None,
                     **_cell_numbers(recs, cfg)})
    parity = []
    for model, pretrained in cfg.in_domain_models:
        parity += runtime_parity(ctx, cfg, model, pretrained)
    return {"rows": rows, "runtime_int8": parity, "stopped": done["stopped"], "matched": done["matched"], "target_fpr": cfg.target_fpr,
            "folds": cfg.folds, "images": len(_scored_names(ctx.inputs)), "paper": dict(PAPER),
            "wall_s_this_run": time.perf_counter() - t0, "verdict": verdict(rows),
            "cpu": cpu_info()}  # int8 kernels, and so the int8 rows, depend on the CPU's flags


def runtime_parity(ctx: Any, cfg: Any, model: str, pretrained: str) -> list[dict[str, Any]]:
    """The same images through the int8 runtime: scores, drops and the rule's decisions vs PyTorch's.

    The bundle (fp32 + int8, the in-domain prompt sets as text banks) is exported once into
    ``OUT/in-domain/<model>/bundle``. Per arm and prompt set, thresholds are searched on the PyTorch
    numbers (all images) and applied to both; a decision that differs is within tolerance when the
    PyTorch score or drop lies within the measured largest int8-vs-PyTorch difference of its threshold.
    """
    from foclip.exporter import ExportConfig, export_bundle
    from foclip.runtime.detector import Detector
    from foclip.runtime.stats import search_thresholds

    names = set(_scored_names(ctx.inputs))
    bundle = ctx.out / "in-domain" / _slug(model) / "bundle"
    if not (bundle / "manifest.json").is_file():
        ctx.progress.message(f"in-domain: exporting {model} (fp32 + int8) for the runtime check")
        export_bundle(ExportConfig(model_name=model, pretrained=pretrained, prompts=IN_DOMAIN_SETS,
                                   precisions=("fp32", "int8"), score_scale=cfg.attack.score_scale), bundle, force=True)
    rows = []
    for arm in ARMS:
        for prompt_set in IN_DOMAIN_SETS:
            folder = _folder(ctx.out, model, arm, prompt_set)
            recs = [r for r in ok_records(cell_records(folder, names)) if r.get("score_adv") is not None]
            if len(recs) < 2:
                continue
            det = Detector.from_bundle(bundle, precision="int8", prompts=prompt_set)
            try:
                got = det.detect([folder / r[k] for k in ("original", "manipulated") for r in recs])
            finally:
                det.close()
            n = len(recs)
            torch_s = np.array([r["score_orig"] for r in recs] + [r["score_adv"] for r in recs])
            torch_d = np.array([r["drop_orig"] for r in recs] + [r["drop_adv"] for r in recs])
            torch_g = np.array([r["score_gray_orig"] for r in recs] + [r["score_gray_adv"] for r in recs])
            rt_s = np.array([g.score_color for g in got], np.float64)
            rt_g = np.array([g.score_gray for g in got], np.float64)
            rt_d = np.array([g.drop for g in got], np.float64)
            ts, td = search_thresholds(torch_s[:n], torch_d[:n], torch_s[n:], torch_d[n:], cfg.target_fpr, "fpr")
            # Tolerance in score units (a drop explodes near score 0): the rule is score >= ts and
            # gray <= score * (1 - td), so a decision may differ where either margin is within what
            # int8 moved the scores.
            tol_s, tol_g = float(np.max(np.abs(rt_s - torch_s))), float(np.max(np.abs(rt_g - torch_g)))
            dec_t, dec_r = (torch_s >= ts) & (torch_d >= td), (rt_s >= ts) & (rt_d >= td)
            flips = np.flatnonzero(dec_t != dec_r)
            near = ((np.abs(torch_s - ts) <= tol_s)
                    | (np.abs(torch_g - torch_s * (1 - td)) <= tol_g + tol_s * abs(1 - td)))
            rows.append({"model": model, "arm": arm, "prompt_set": prompt_set, "decisions": int(2 * n),
                         "equal": int(2 * n - len(flips)), "max_abs_score_diff": tol_s, "max_abs_gray_diff": tol_g,
                         "median_abs_score_diff": float(np.median(np.abs(rt_s - torch_s))),
                         "flips_within_tolerance": bool(near[flips].all()) if len(flips) else True,
                         "tau_score": float(ts), "tau_drop": float(td)})
    return rows


def cell_records(folder: Path, names: set[str]) -> list[dict[str, Any]]:
    """The latest record of each scored image in an attack folder, by file name.

    A folder may also hold records of images that are not among this run's inputs (an earlier subset)
    or of the same image under another path (another clone of the repository): neither may count twice
    or at all.

    Args:
        folder: one cell's attack folder (its ``manifest.jsonl``).
        names: file names of this run's scored images.

    Returns:
        One record per scored image that has one, later records winning.
    """
    from foclip_train.generate import latest_records

    by_name = {Path(r["source"]).name: r for r in latest_records(folder).values()}
    return [r for name, r in by_name.items() if name in names]


def _scored_names(inputs: list[str]) -> list[str]:
    from foclip_train.generate import collect_inputs

    return [p.name for p in collect_inputs(inputs)]


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per model and arm on the domain set: does the drop add anything over the score gate?"""
    lines = []
    for r in rows:
        if r["prompt_set"] != IN_DOMAIN_SETS[0] or "detection" not in r:
            continue
        d = r["detection"]
        gain = d["rule_auc_gain_over_score"]
        lo, hi = d["auc_drop"]["ci95"]
        dd = d["drop_minus_score_auc"]
        dlo, dhi = dd["ci95"]
        alone = ("the drop alone is no better than chance" if lo <= 0.5 <= hi else
                 "the drop alone separates them" if lo > 0.5 else "the drop alone points the wrong way")
        versus = ("better than the score alone" if dlo > 0 else "worse than the score alone" if dhi < 0 else
                  "not distinguishable from the score alone")
        rule = "–" if gain is None else f"{gain:+.3f}"
        lines.append(f"{r['model']}, {r['arm']} arm ({r['n']} images, gain {r['gain_of_means_pct']:+.1f} %): "
                     f"AUC score {d['auc_score']['auc']:.3f}, drop {d['auc_drop']['auc']:.3f} [{lo:.3f}, {hi:.3f}] "
                     f"({alone}); drop minus score {dd['diff']:+.3f} [{dlo:+.3f}, {dhi:+.3f}] ({versus}); "
                     f"the gated rule's AUC minus the score's: {rule}.")
    return lines


# ------------------------------------------------------------------------------------------ table
def _ci(x: dict[str, Any], key: str, fmt: str = "{:.1%}") -> str:
    if "skipped" in x or key not in x:
        return "–"
    lo, hi = x["ci95"][key]
    return f"{fmt.format(x[key])} [{fmt.format(lo)}, {fmt.format(hi)}]"


def _auc_ci(a: dict[str, Any]) -> str:
    return f"{a['auc']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"


def in_domain_table(res: dict[str, Any], cfg: Any) -> str:
    """The section as markdown: one row per model, arm and prompt set, the paper's row first."""
    p = res["paper"]
    lines = [
        (f"Held-out clip art and emoji ({res['images']} scored images, never trained on; `foclip data heldout`). "
         "Gain = improvement of the mean score; drop = (score - score_gray) / score, shown as the median (an image "
         "scoring near 0 makes its drop explode, so means say little; report.json has both); detection at a "
         f"{res['target_fpr']:.0%} FPR target with {res['folds']}-fold cross-fitted thresholds (Wilson 95 % "
         "intervals); AUCs threshold-free (bootstrap 95 %). Matched arm: lr and steps chosen on separate "
         "calibration images for the paper's gain."), "",
        ("| model | arm (lr, steps) | prompt set | n | gain | paper gain (matched: target) | median drop orig / manip | rule acc | rule TPR | "
         "rule FPR | score-gate acc | AUC score | AUC drop | AUC rule | rule - score |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        (f"| paper (CLIP ViT-L) | lr 7, 1000 | artistic / ImageNet | – | +{p['improvement_pct_masterpieces']} % / "
         f"+{p['improvement_pct_imagenet']} % | – | {p['drop_original']:.1%} / {p['drop_manipulated']:.1%} | "
         f"{p['detection_accuracy']:.0%} | – | – | – | – | – | – | – |"),
    ]
    for r in res["rows"]:
        a = r["attack"]
        arm = f"{r['arm']} ({a['lr']:g}, {a['steps']})" if a.get("lr") is not None else r["arm"]
        head = f"| {r['model']} | {arm} | {r['prompt_set']} | {r['n']} |"
        if "detection" not in r:
            lines.append(head + " – | – | – | – | – | – | – | – | – | – | – |")
            continue
        d = r["detection"]
        paper = pct(r["paper_gain_pct"], sign=True) if r["paper_gain_pct"] is not None else "–"
        if r["target_gain_pct"] is not None:
            paper += f" (target {pct(r['target_gain_pct'], sign=True)}, calibration {pct(r['calibration_gain_pct'], sign=True)})"
        rule_auc = _ci(d["rule"], "roc_auc", "{:.3f}")
        gain = d["rule_auc_gain_over_score"]
        lines.append(
            f"{head} {pct(r['gain_of_means_pct'], sign=True)} | {paper} | {r['median_drop_orig']:.1%} / "
            f"{r['median_drop_adv']:.1%} | {_ci(d['rule'], 'accuracy')} | {_ci(d['rule'], 'tpr')} | "
            f"{_ci(d['rule'], 'fpr')} | {_ci(d['score_alone'], 'accuracy')} | {_auc_ci(d['auc_score'])} | "
            f"{_auc_ci(d['auc_drop'])} | {rule_auc} | {'–' if gain is None else f'{gain:+.3f}'} |")
    if res["verdict"]:
        lines += ["", "**Does the drop add anything over the score gate here?**", ""] + [f"- {v}" for v in res["verdict"]]
    if res.get("runtime_int8"):
        lines += ["", ("**The same images through the int8 runtime** (`foclip.runtime`, ONNX Runtime, dynamic int8): "
                       "the rule's decisions at thresholds searched on the PyTorch numbers, and the int8-vs-PyTorch "
                       "score differences (the largest is the tolerance a differing decision is judged by: its "
                       "score or gray score lies that close to a threshold)"
                       + (f"; {cpu_line(res['cpu'])}." if res.get("cpu") else ".")), "",
                  ("| model | arm | prompt set | decisions equal | score diff: median / max (0..100) | "
                   "gray score diff: max | differing decisions within tolerance |"), "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['arm']} | {r['prompt_set']} | {r['equal']} / {r['decisions']} | "
                  f"{r['median_abs_score_diff']:.3f} / {r['max_abs_score_diff']:.3f} | {r['max_abs_gray_diff']:.3f} | "
                  f"{'yes' if r['flips_within_tolerance'] else 'NO'} |" for r in res["runtime_int8"]]
    if res["stopped"]:
        lines += ["", "Not finished within the budget (reported with the n they have): " + "; ".join(res["stopped"])
                  + "."]
    return "\n".join(lines)


DOCS_BEGIN, DOCS_END = "<!-- in-domain table: generated from report.json by scripts/in_domain_docs.py -->", \
    "<!-- end of the generated in-domain table -->"


def docs_block(report: dict[str, Any]) -> str:
    """The in-domain block docs/science.md opens with, made from a report.json (never retyped).

    Args:
        report: a `foclip reproduce` report holding the ``in_domain`` section.

    Returns:
        The block between :data:`DOCS_BEGIN` and :data:`DOCS_END` (markers included).
    """
    res = report["sections"]["in_domain"]
    attack_s = sum(r.get("wall_s") or 0 for r in res["rows"])
    cfg = report["config"]
    head = (f"Run: `foclip reproduce --images in-domain --sections in_domain` (models "
            f"{', '.join(m for m, _ in cfg['in_domain_models'])}; attack wall time {attack_s / 3600:.1f} h summed over "
            f"cells, section {report['section_wall_s'].get('in_domain') or 0:.0f} s in its last run, on a 2-core CPU "
            "shared with other jobs" + (f"; {cpu_line(res['cpu'])}" if res.get("cpu") else "") + "). Every number below is `report.json`'s, rendered by "
            "`foclip_train.sections.in_domain.in_domain_table`, the same function that writes REPORT.md.")
    return "\n".join([DOCS_BEGIN, "", head, "", in_domain_table(res, None), "", DOCS_END])


def in_domain_figures(figs: Path, res: dict[str, Any], report: dict[str, Any], cfg: Any, ctx: Any) -> list[Path]:
    """in_domain_drops.png: gray drop of originals vs each arm's attacks on the domain set, per model."""
    from foclip.plots import pyplot, save_figure

    cells = [r for r in res["rows"] if r["prompt_set"] == IN_DOMAIN_SETS[0] and "detection" in r]
    if not cells:
        return []
    names = set(_scored_names(ctx.inputs))
    plt = pyplot()
    models = list(dict.fromkeys(r["model"] for r in cells))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [c for c in cells if c["model"] == model]
        recs = {c["arm"]: ok_records(cell_records(_folder(ctx.out, model, c["arm"], c["prompt_set"]), names))
                for c in mine}
        most = max(recs.values(), key=len)  # the originals are the same images in every arm
        series = [(f"originals (n={len(most)})", [x["drop_orig"] for x in most])] + [
            (f"FoCLIP {c['arm']} arm (n={c['n']}, gain {c['gain_of_means_pct']:+.0f} %)",
             [x["drop_adv"] for x in recs[c["arm"]]]) for c in mine]
        # An image scoring near 0 has an exploding drop: drops below -1 are drawn at the left edge.
        lo, hi = -1.0, 1.0
        bins = np.linspace(lo, hi, 41)
        for label, values in series:
            ax.hist(np.clip(values, lo, hi), bins=bins, alpha=0.5, label=label)
        ax.axvline(PAPER["drop_original"], color="C0", ls="--", lw=1, label="paper: original 8.5 %")
        ax.axvline(PAPER["drop_manipulated"], color="C1", ls="--", lw=1, label="paper: FoCLIP 63.2 %")
        ax.set_xlabel("grayscale drop (fraction; below -1 drawn at -1)")
        ax.set_ylabel("images")
        ax.set_title(f"{model} / reference, held-out clip art and emoji, `{IN_DOMAIN_SETS[0]}` prompts", fontsize=8)
        ax.legend(fontsize=6)
    return [save_figure(plt, fig, figs / "in_domain_drops.png")]


SECTION = Section("in_domain", "In domain: held-out clip art and emoji, where the reference CLIPs are competent",
                  in_domain_run, in_domain_table, in_domain_figures, reads=("in-domain",), default=False,
                  plain_sets=False)
