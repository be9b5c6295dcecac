"""`foclip reproduce --sections wild`: the detectors on clean traffic and on attacks after sharing.

Two tables (issue 23):

* **false positives**: at thresholds calibrated on the run's plain attack (originals vs
  manipulated of the first prompt set, at the run's FPR target), the share of clean images each
  detector flags, per group of the clean corpus (``--clean DIR``; default: the corpus of
  :mod:`foclip_train.wild_corpus` built into ``OUT/wild/corpus``), and of the run's originals after
  the transforms of :data:`TRANSFORMS` (JPEG q95/q75/q50 with 4:2:0 and 4:4:4 chroma, a 0.5x
  resize, Gaussian noise);
* **survival**: for the manipulated images, the share of the attack's score gain retained after
  each transform and each detector's TPR, for the run's ``--output`` and the other one (a second
  attack of the first ``extra_images`` images into ``OUT/wild/attack-output-<o>``).

Detectors: the gray rule, the multi-probe rule (probes from the adaptive section when it has
run, else chosen on this attack by :func:`foclip_train.questions.select_probes`) and each
spectral statistic of :func:`foclip_train.spectral.image_statistics` (a single threshold, no score
gate). The run's own originals and manipulated images are judged by 2-fold cross-fitted
thresholds (each half by thresholds searched on the other half), clean images by thresholds
searched on all of them. Every rate carries its count and a Wilson 95 % interval; the gain's
interval is a seeded bootstrap over images.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from foclip.errors import FoclipError
from foclip.plots import pyplot, save_figure
from foclip.scoring import PROBES
from foclip_train.sections.base import Section, who

__all__ = ["SECTION", "TRANSFORMS", "apply_transform", "clean_listing", "wild_compute", "wild_figures",
           "wild_markdown"]

# name -> (kind, parameter, chroma subsampling for JPEG: 2 = 4:2:0, 0 = 4:4:4)
TRANSFORMS: dict[str, tuple[str, float, int]] = {
    "none": ("none", 0, 0),
    "jpeg q95 4:2:0": ("jpeg", 95, 2), "jpeg q95 4:4:4": ("jpeg", 95, 0),
    "jpeg q75 4:2:0": ("jpeg", 75, 2), "jpeg q75 4:4:4": ("jpeg", 75, 0),
    "jpeg q50 4:2:0": ("jpeg", 50, 2), "jpeg q50 4:4:4": ("jpeg", 50, 0),
    "resize 0.5x": ("resize", 0.5, 0),
    "noise sigma 4": ("noise", 4.0, 0),
}
SPECTRAL = ("chroma_hf", "luma_hf", "hf_chroma_share")
BOOT = 1000


def apply_transform(data: bytes, name: str, seed: int = 0) -> tuple[bytes, str]:
    """One transform of :data:`TRANSFORMS` applied to an encoded image.

    Args:
        data: the image file's bytes.
        name: a key of :data:`TRANSFORMS`.
        seed: seed of the noise.

    Returns:
        ``(encoded bytes, file extension)``: JPEG for the JPEG transforms, PNG otherwise.
    """
    kind, param, sub = TRANSFORMS[name]
    img = Image.open(io.BytesIO(data)).convert("RGB")
    buf = io.BytesIO()
    if kind == "jpeg":
        img.save(buf, format="JPEG", quality=int(param), subsampling=sub)
        return buf.getvalue(), ".jpg"
    if kind == "resize":
        img = img.resize((max(1, round(img.width * param)), max(1, round(img.height * param))),
                         Image.Resampling.LANCZOS)
    elif kind == "noise":
        rng = np.random.default_rng(seed)
        x = np.asarray(img, np.float64) + rng.normal(0.0, param, (img.height, img.width, 3))
        img = Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    img.save(buf, format="PNG")
    return buf.getvalue(), ".png"


def _transformed(src: Path, dest_dir: Path, name: str, seed: int) -> Path:
    """``src`` after transform ``name``, written once under ``dest_dir`` (reruns reuse it)."""
    from foclip.manifest import atomic_write_bytes

    if name == "none":
        return src
    ext = ".jpg" if TRANSFORMS[name][0] == "jpeg" else ".png"
    dest = dest_dir / (src.stem + ext)
    if not dest.is_file():
        data, _ = apply_transform(src.read_bytes(), name, seed)
        atomic_write_bytes(dest, data)
    return dest


def _measure(paths: Sequence[Path], loaded: Any, bank: Any, scale: float) -> dict[str, np.ndarray]:
    """Colour + probe scores and the spectral statistics of image files, as the detector sees them."""
    import torch

    from foclip.models import ImageEncoder
    from foclip.scoring import apply_probe, clipscore
    from foclip_train.questions import EMBED_CHUNK, model_view
    from foclip_train.spectral import image_statistics

    # As questions.probe_scores, but each file is decoded once for both the scores and the spectra.
    views = [model_view(p, loaded.preprocess) for p in paths]
    spec = np.array([[image_statistics(v)[k] for k in SPECTRAL] for v in views]).reshape(len(paths), len(SPECTRAL))
    if not views:
        return {"scores": np.zeros((0, 1 + len(PROBES))), "spectral": spec}
    pix = [v.astype(np.float32).transpose(2, 0, 1) for v in views]
    rows = [x for img in pix for x in [img] + [apply_probe(img, q, channel_axis=0) for q in PROBES]]
    encoder = ImageEncoder(loaded.model, loaded.preprocess).to(bank.device)
    embs = []
    with torch.no_grad():
        for i in range(0, len(rows), EMBED_CHUNK):
            embs.append(encoder(torch.from_numpy(np.stack(rows[i:i + EMBED_CHUNK])).to(bank.device)).float().cpu().numpy())
    s = clipscore(np.concatenate(embs), bank.embeddings.float().cpu().numpy(), scale=scale)
    return {"scores": s.reshape(len(paths), 1 + len(PROBES)), "spectral": spec}


def _stats(m: dict[str, np.ndarray], detector: tuple[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(score, statistic) of a detector: the probe rules gate on the colour score, spectral ones do not."""
    from foclip_train.questions import probe_drop

    kind, arg = detector
    if kind == "probe":
        return m["scores"][:, 0], probe_drop(m["scores"], list(PROBES), arg)
    col = SPECTRAL.index(arg)
    return np.ones(len(m["spectral"])), m["spectral"][:, col]


def _rate(flags: np.ndarray) -> dict[str, Any]:
    from foclip.runtime.stats import wilson_interval

    k, n = int(np.sum(flags)), len(flags)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": list(wilson_interval(k, n))}


def _gain(so: np.ndarray, sm: np.ndarray, so_t: np.ndarray, sm_t: np.ndarray, seed: int) -> dict[str, Any]:
    """Share of the attack's mean score gain left after a transform (the transformed original as
    baseline), with a seeded bootstrap 95 % interval over images."""
    base, after = sm - so, sm_t - so_t
    if not len(base) or np.mean(base) <= 0:
        return {"retained": None, "ci95": [None, None], "mean_gain": float(np.mean(base)) if len(base) else None}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), (BOOT, len(base)))
    b = base[idx].mean(axis=1)
    boots = np.where(b > 0, after[idx].mean(axis=1) / np.where(b > 0, b, 1), np.nan)
    lo, hi = np.nanquantile(boots, [0.025, 0.975])
    return {"retained": float(np.mean(after) / np.mean(base)), "ci95": [float(lo), float(hi)],
            "mean_gain": float(np.mean(base)), "mean_gain_after": float(np.mean(after))}


def _probes(cfg: Any, ctx: Any, so: np.ndarray, sm: np.ndarray) -> tuple[list[str], str]:
    from foclip_train.questions import select_probes

    path = ctx.out / "sections" / "adaptive.json"
    if path.is_file():
        try:
            chosen = json.loads(path.read_text(encoding="utf-8"))["result"]["multi_probes"]
            return list(chosen), "the adaptive section's choice"
        except (ValueError, KeyError, TypeError):
            pass
    chosen, _, _ = select_probes(so, sm, list(PROBES), cfg.multi_probes)
    return chosen, "chosen on this attack's images (in-sample: run the adaptive section for an out-of-sample choice)"


def _clean_corpus(cfg: Any, ctx: Any) -> tuple[dict[str, list[str]], str]:
    """Clean groups: the ``--clean`` folders, else the corpus built into ``OUT/wild/corpus``."""
    from foclip.runtime.inputs import clean_groups

    dirs = list(getattr(cfg, "clean", ()) or ())
    if not dirs:
        corpus = ctx.out / "wild" / "corpus"
        if not (corpus / "data_card.csv").is_file():
            from foclip_train.wild_corpus import build_corpus

            ctx.progress.message("building the clean corpus (foclip data wild) into " + str(corpus))
            build_corpus(corpus)
        dirs = [str(corpus)]
        where = f"the corpus of `foclip data wild` ({corpus}, data card data_card.csv)"
    else:
        where = ", ".join(dirs)
    groups: dict[str, list[str]] = {}
    for d in dirs:
        for g, paths in clean_groups(d).items():
            groups[g if len(dirs) == 1 else f"{Path(d).name}/{g}"] = paths
    return groups, where


def wild_compute(by_set: dict[str, list[dict[str, Any]]], cfg: Any, ctx: Any) -> dict[str, Any]:
    """False positives on clean traffic and attack survival after sharing (see the module docstring).

    Args:
        by_set: records of the main prompt-set folders.
        cfg: the :class:`foclip_train.reproduce.ReproduceConfig`.
        ctx: the run context.

    Returns:
        JSON-ready numbers (see :func:`wild_markdown`).
    """
    from foclip.runtime.stats import search_thresholds, threshold_edge_warnings
    from foclip_train.questions import _generate_matched, _ok, _paths
    from foclip_train.spectral import RETIRED

    name = cfg.prompt_sets[0]
    plain = sorted(_ok(by_set.get(name, [])), key=lambda r: r["source"])
    if len(plain) < 2:
        return {"skipped": f"{len(plain)} usable images in {name}: need at least 2"}
    loaded, bank = ctx.resources(cfg.model, cfg.pretrained, name)
    w = cfg.attack.score_scale
    base = ctx.set_dir(name)
    work = ctx.out / "wild"

    # Attacks: the run's own, and the other --output of the first extra_images images.
    attacks = [(cfg.attack.output, base, plain)]
    other = "input" if cfg.attack.output == "model" else "model"
    notes = []
    if other == "model" and cfg.attack.space != "model":
        notes.append("`--output model` needs `--space model`: only the run's own output is measured")
    else:
        acfg = dataclasses.replace(cfg.attack, output=other)
        gcfg = dataclasses.replace(cfg.generate_config(name), attack=acfg)
        folder = work / f"attack-output-{other}"
        sub = plain[: cfg.extra_images]
        recs = _generate_matched(ctx, sub, folder, gcfg, (loaded, bank), f"wild: --output {other} ({name})")
        recs = [r for r in recs if not r.get("error")]
        if recs:
            attacks.append((other, folder, recs))
    fold_of = {r["source"]: i % 2 for i, r in enumerate(plain)}

    # Measure every attack's originals and manipulated images under every transform.
    meas: dict[tuple[str, str], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
    for out_mode, folder, recs in attacks:
        for t in TRANSFORMS:
            paths = {}
            for key in ("original", "manipulated"):
                dest = work / "files" / f"output-{out_mode}" / t.replace(" ", "_").replace(":", "") / key
                paths[key] = [_transformed(p, dest, t, cfg.seed + i) for i, p in enumerate(_paths(folder, recs, key))]
            meas[(out_mode, t)] = (_measure(paths["original"], loaded, bank, w),
                                   _measure(paths["manipulated"], loaded, bank, w))
    main_o, main_m = meas[(cfg.attack.output, "none")]
    chosen, chosen_how = _probes(cfg, ctx, main_o["scores"], main_m["scores"])
    detectors = {"gray rule": ("probe", ["gray"]), f"multi-probe ({','.join(chosen)})": ("probe", chosen),
                 **{f"spectral {s}" + (" (retired)" if s in RETIRED else ""): ("spectral", s) for s in SPECTRAL}}

    # Thresholds: all images (for clean traffic) and 2-fold cross-fitted (for the run's own images).
    folds = np.array([fold_of[r["source"]] for r in plain])
    cross = len(plain) >= 4
    thr: dict[str, dict[str, Any]] = {}
    for det, spec in detectors.items():
        so, do = _stats(main_o, spec)
        sm, dm = _stats(main_m, spec)
        ts, td = search_thresholds(so, do, sm, dm, cfg.target_fpr, "fpr")
        per_fold = {}
        for f in (0, 1):
            tr = folds != f if cross else np.ones(len(folds), bool)
            per_fold[f] = search_thresholds(so[tr], do[tr], sm[tr], dm[tr], cfg.target_fpr, "fpr")
        warns = threshold_edge_warnings(so, do, sm, dm, ts, td)
        if spec[0] == "spectral":  # no score gate by design: only the statistic's own edge matters
            warns = [x for x in warns if not x.startswith("tau_score is 0")]
        thr[det] = {"tau_score": ts, "tau_drop": td, "per_fold": per_fold, "warnings": warns}

    def flags(m: dict[str, np.ndarray], det: str, recs: list[dict[str, Any]] | None) -> np.ndarray:
        s, d = _stats(m, detectors[det])
        if recs is None:
            t = thr[det]
            return (s >= t["tau_score"]) & (d >= t["tau_drop"])
        out = np.zeros(len(s), bool)
        for i, r in enumerate(recs):
            ts, td = thr[det]["per_fold"][fold_of.get(r["source"], 0)]
            out[i] = s[i] >= ts and d[i] >= td
        return out

    # Table 1: false positives.
    fpr_rows = []
    try:
        groups, where = _clean_corpus(cfg, ctx)
    except FoclipError as exc:
        groups, where = {}, f"none ({exc})"
    for g, paths in groups.items():
        m = _measure([Path(p) for p in paths], loaded, bank, w)
        fpr_rows.append({"group": g, "kind": "clean", "n": len(paths),
                         "score_range": [float(m["scores"][:, 0].min()), float(m["scores"][:, 0].max())],
                         "detectors": {d: _rate(flags(m, d, None)) for d in detectors}})
    for t in TRANSFORMS:
        m = meas[(cfg.attack.output, t)][0]
        fpr_rows.append({"group": f"originals, {t}", "kind": "originals", "n": len(plain),
                         "score_range": [float(m["scores"][:, 0].min()), float(m["scores"][:, 0].max())],
                         "detectors": {d: _rate(flags(m, d, plain)) for d in detectors}})

    # Table 2: survival.
    surv_rows = []
    for out_mode, _, recs in attacks:
        o0, m0 = meas[(out_mode, "none")]
        for t in TRANSFORMS:
            ot, mt = meas[(out_mode, t)]
            surv_rows.append({"output": out_mode, "transform": t, "n": len(recs),
                              "gain": _gain(o0["scores"][:, 0], m0["scores"][:, 0], ot["scores"][:, 0],
                                            mt["scores"][:, 0], cfg.seed),
                              "detectors": {d: _rate(flags(mt, d, recs)) for d in detectors}})

    # A statistic whose FPR on some clean group exceeds the target fails as a detector (issue 23, 4).
    over = {d: sorted(r["group"] for r in fpr_rows if r["kind"] == "clean"
                      and r["detectors"][d]["ci95"][0] > cfg.target_fpr) for d in detectors}
    return {"prompt_set": name, "target_fpr": cfg.target_fpr, "clean_from": where, "probes": chosen,
            "probes_from": chosen_how, "cross_fitted": cross, "notes": notes,
            "score_range": {"originals": [float(main_o["scores"][:, 0].min()), float(main_o["scores"][:, 0].max())],
                            "manipulated": [float(main_m["scores"][:, 0].min()), float(main_m["scores"][:, 0].max())]},
            "thresholds": {d: {"tau_score": t["tau_score"], "tau_drop": t["tau_drop"], "warnings": t["warnings"]}
                           for d, t in thr.items()},
            "fpr_rows": fpr_rows, "survival_rows": surv_rows, "fpr_above_target": over,
            "transforms": {k: list(v) for k, v in TRANSFORMS.items()}}


def _cell(r: dict[str, Any]) -> str:
    if not r["n"]:
        return "–"
    return f"{r['k']}/{r['n']} = {r['rate']:.0%} [{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}]"


def wild_markdown(res: dict[str, Any], cfg: Any) -> str:
    """The false-positive and survival tables as markdown."""
    if "skipped" in res:
        return f"Skipped: {res['skipped']}."
    dets = list(res["thresholds"])
    lines = [(f"Thresholds calibrated on the plain attack of `{res['prompt_set']}` (originals vs manipulated) at a "
              f"{res['target_fpr']:.0%} FPR target; the run's own images are judged by "
              + ("2-fold cross-fitted thresholds (each half by thresholds fitted on the other half)"
                 if res["cross_fitted"] else "thresholds fitted on them (fewer than 4 images: in-sample)")
              + f", clean images by thresholds fitted on all. Multi-probe probes: {', '.join(res['probes'])} "
              f"({res['probes_from']}). Spectral statistics: one threshold, no score gate. Clean images: "
              f"{res['clean_from']}. Cells: flagged/images = rate [Wilson 95 %]."), ""]
    lines += ["| detector | tau_score | tau_drop / statistic threshold | note |", "|---|---|---|---|"]
    for d, t in res["thresholds"].items():
        lines.append(f"| {d} | {t['tau_score']:.3f} | {t['tau_drop']:.4f} | {'; '.join(t['warnings']) or '–'} |")
    lines += ["", "**False positives** (clean groups, then the run's originals after each transform):", "",
              "| images | n | score range | " + " | ".join(dets) + " |", "|---|---|---|" + "---|" * len(dets)]
    for r in res["fpr_rows"]:
        lo, hi = r["score_range"]
        lines.append(f"| {r['group']} | {r['n']} | {lo:.1f}-{hi:.1f} | "
                     + " | ".join(_cell(r["detectors"][d]) for d in dets) + " |")
    over = {d: g for d, g in res["fpr_above_target"].items() if g}
    if over:
        lines += ["", f"FPR above the {res['target_fpr']:.0%} target with 95 % confidence (Wilson lower bound above "
                  "it): " + "; ".join(f"{d} on {', '.join(g)}" for d, g in over.items()) + "."]
    lines += ["", ("**Survival** of the attack: gain retained = mean(score(T(manipulated)) - score(T(original))) / "
                   "mean(score(manipulated) - score(original)) [bootstrap 95 %]; then each detector's TPR."), "",
              "| --output | transform | n | gain retained | " + " | ".join(dets) + " |",
              "|---|---|---|---|" + "---|" * len(dets)]
    for r in res["survival_rows"]:
        g = r["gain"]
        gain = "–" if g["retained"] is None else f"{g['retained']:.0%} [{g['ci95'][0]:.0%}, {g['ci95'][1]:.0%}]"
        lines.append(f"| {r['output']} | {r['transform']} | {r['n']} | {gain} | "
                     + " | ".join(_cell(r["detectors"][d]) for d in dets) + " |")
    for n in res["notes"]:
        lines += ["", f"Note: {n}."]
    return "\n".join(lines)


def wild_figures(figs: Path, res: dict[str, Any], report: dict[str, Any], cfg: Any, ctx: Any) -> list[Path]:
    """One figure per table: ``wild_fpr.png`` and ``wild_survival.png`` (rates with Wilson bars)."""
    plt, w = pyplot(), who(report)
    if not res or "fpr_rows" not in res:
        return []
    dets = list(res["thresholds"])
    written = []
    for key, label_of, fname, ylabel in (
            ("fpr_rows", lambda r: r["group"], "wild_fpr.png", "false-positive rate"),
            ("survival_rows", lambda r: f"{r['output']}: {r['transform']}", "wild_survival.png",
             "TPR (manipulated flagged)")):
        rows = res[key]
        fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(rows) * len(dets) / 2), 4.2))
        x = np.arange(len(rows))
        width = 0.8 / len(dets)
        for i, d in enumerate(dets):
            rate = np.array([r["detectors"][d]["rate"] or 0 for r in rows])
            lo = np.array([r["detectors"][d]["ci95"][0] for r in rows])
            hi = np.array([r["detectors"][d]["ci95"][1] for r in rows])
            ax.bar(x + (i - len(dets) / 2 + 0.5) * width, rate, width, label=d,
                   yerr=[np.clip(rate - lo, 0, None), np.clip(hi - rate, 0, None)], capsize=2)
        if key == "fpr_rows":
            ax.axhline(res["target_fpr"], color="red", linestyle="--", linewidth=1,
                       label=f"target {res['target_fpr']:.0%}")
        else:
            gains = [r["gain"]["retained"] for r in rows]
            ax.plot(x, [g if g is not None else np.nan for g in gains], "k.-", label="gain retained")
        ax.set_xticks(x, [label_of(r) for r in rows], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.25)
        ax.set_title(f"{'false positives on clean traffic' if key == 'fpr_rows' else 'attack survival'} "
                     f"(bars: Wilson 95 %)\n{w}", fontsize=9)
        ax.legend(fontsize=7, ncol=3)
        written.append(save_figure(plt, fig, figs / fname))
    return written


def clean_listing(folders: Sequence[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file under the clean folders: edited clean images recompute the section."""
    found = []
    for f in folders:
        root = Path(f)
        if root.is_dir():
            found += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()]
    return found


# wild is opt-in: a second attack per image and a clean corpus.
SECTION = Section("wild", "In the wild: false positives on clean traffic, attacks after JPEG and resizing",
                  wild_compute, wild_markdown, wild_figures, reads=("wild",), default=False,
                  key_extra=lambda cfg: clean_listing(cfg.clean))
