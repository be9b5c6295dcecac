"""The FoCLIP paper's open questions as `foclip reproduce` sections: adaptive attacker, transfer, spectral.

* **adaptive**: does the grayscale rule survive an attacker who knows it, and does a detector with
  several colour-space probes (chosen by measurement) survive plain, gray-adaptive and
  multi-probe-adaptive attacks? Attacks go through :func:`foclip_train.generate.run_generate`
  (``AttackConfig.adaptive``); scores are measured on the saved files through the runtime's decode
  path, probes are :func:`foclip.scoring.apply_probe` of those pixels, thresholds and their
  held-out evaluation are :mod:`foclip.runtime.stats`'s.
* **transfer**: images attacked on one CLIP, scored and detected on every other one.
* **spectral**: where the perturbation lives (radial frequency band, luma vs chroma), on the model
  view of both images, and the single-image spectral detectors beside the grayscale rule.

Each ``*_compute(by_set, cfg, ctx)`` returns JSON-ready numbers; ``*_markdown`` renders them.
"""

from __future__ import annotations

# Lazy imports: torch and open_clip are imported only inside the measurements that run a model.
import dataclasses
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from foclip.errors import FoclipError
from foclip.runtime.decode import DecodeLimits, decode_item
from foclip.runtime.stats import held_out_evaluation, roc_auc, search_thresholds
from foclip.scoring import PROBES, apply_probe, clipscore, drop
from foclip_train.generate import latest_records
from foclip_train.spectral import RETIRED, perturbation_spectrum, spectral_detectors

__all__ = [
    "adaptive_compute",
    "adaptive_markdown",
    "probe_drop",
    "probe_scores",
    "select_probes",
    "spectral_compute",
    "spectral_markdown",
    "transfer_compute",
    "transfer_markdown",
]

EMBED_CHUNK = 64


# ----------------------------------------------------------------------------- shared helpers


def _ok(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if not r.get("error")]


def slug(text: str) -> str:
    """A folder-safe name for a model or weights string (a short hash keeps distinct paths apart)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(text).name if "/" in text else text).strip("._") or "x"
    return base if base == text else f"{base}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def model_view(path: Path, preprocess: Any) -> np.ndarray:
    """The S x S view the detector sees of an image file: (S, S, 3) float64 RGB in [0, 1]."""

    limits = DecodeLimits(max_pixels=2**62, max_aspect=float("inf"), min_side=1)
    return decode_item(path, repr(str(path)), preprocess, limits).astype(np.float64) / 255.0


def probe_scores(paths: Sequence[Path], loaded: Any, text_bank: Any, scale: float,
                 probes: Sequence[str] = tuple(PROBES)) -> np.ndarray:
    """CLIPscore of image files and of each colour-space probe of them, as the detector sees them.

    Each file is decoded and preprocessed by the runtime (:func:`model_view`), each probe is
    :func:`foclip.scoring.apply_probe` of those pixels (as the runtime's multi-probe detector does),
    and everything is embedded by the torch image encoder in fp32.

    Args:
        paths: image files.
        loaded: the :class:`foclip.models.LoadedClip`.
        text_bank: its :class:`foclip_train.text_bank.TorchTextBank`.
        scale: w, the CLIPscore scale.
        probes: probe names (keys of :data:`foclip.scoring.PROBES`).

    Returns:
        (N, 1 + len(probes)) float64: column 0 the colour score, then one column per probe.
    """
    import torch

    from foclip.models import ImageEncoder

    if not paths:
        return np.zeros((0, 1 + len(probes)))
    pix = [model_view(p, loaded.preprocess).astype(np.float32).transpose(2, 0, 1) for p in paths]
    rows = [x for img in pix for x in [img] + [apply_probe(img, q, channel_axis=0) for q in probes]]
    encoder = ImageEncoder(loaded.model, loaded.preprocess).to(text_bank.device)
    embs = []
    with torch.no_grad():
        for i in range(0, len(rows), EMBED_CHUNK):
            x = torch.from_numpy(np.stack(rows[i:i + EMBED_CHUNK])).to(text_bank.device)
            embs.append(encoder(x).float().cpu().numpy())
    s = clipscore(np.concatenate(embs), text_bank.embeddings.float().cpu().numpy(), scale=scale)
    return s.reshape(len(paths), 1 + len(probes))


def probe_drop(scores: np.ndarray, names: Sequence[str], use: Sequence[str]) -> np.ndarray:
    """The multi-probe statistic: the largest relative drop over the probes in ``use``.

    Args:
        scores: :func:`probe_scores` output (colour column first).
        names: the probe name of each later column.
        use: the detector's probes.

    Returns:
        (N,) drops as fractions (``gray`` alone gives the paper's grayscale drop).
    """

    cols = [1 + list(names).index(q) for q in use]
    return np.max(np.stack([drop(scores[:, 0], scores[:, c]) for c in cols]), axis=0)


def select_probes(orig: np.ndarray, man: np.ndarray, names: Sequence[str], k: int
                  ) -> tuple[list[str], dict[str, float], dict[str, float]]:
    """The ``k`` probes whose single drop best separates manipulated from original images.

    Ranked by ROC-AUC of the probe's drop, ties (common on small sets, where several probes reach
    1.0) broken by the separation margin: the gap between the mean drops of the two classes over
    their pooled standard deviation (Cohen's d), then by :data:`PROBES` order.

    Args:
        orig: :func:`probe_scores` of originals.
        man: :func:`probe_scores` of manipulated images.
        names: probe names of the columns.
        k: how many to keep.

    Returns:
        ``(chosen probes, {probe: ROC-AUC of its drop}, {probe: Cohen's d of its drop})``.
    """

    aucs, sep = {}, {}
    for q in names:
        do, dm = probe_drop(orig, names, [q]), probe_drop(man, names, [q])
        aucs[q] = roc_auc(dm, do)
        pooled = float(np.sqrt((np.var(do) + np.var(dm)) / 2)) or 1e-12
        sep[q] = float((np.mean(dm) - np.mean(do)) / pooled)
    ranked = sorted(names, key=lambda q: (-aucs[q], -sep[q]))  # stable: full ties keep PROBES order
    return ranked[:k], aucs, sep


def _detect(so: np.ndarray, do: np.ndarray, sm: np.ndarray, dm: np.ndarray, cfg: Any,
            taus: tuple[float, float] | None = None) -> dict[str, Any]:
    """Threshold-free AUC, fit-set TPR at the target FPR, held-out rule metrics, and TPR under ``taus``."""

    ts, td = search_thresholds(so, do, sm, dm, cfg.target_fpr, "fpr")
    res: dict[str, Any] = {
        "n_originals": len(so), "n_manipulated": len(sm),
        "auc_drop": roc_auc(dm, do),
        "fit": {"tau_score": ts, "tau_drop": td, "tpr": float(((sm >= ts) & (dm >= td)).mean()),
                "fpr": float(((so >= ts) & (do >= td)).mean())},
        "held_out": held_out_evaluation(so, do, sm, dm, cfg.target_fpr, "fpr", cfg.folds, cfg.seed, reps=300),
    }
    if taus is not None:
        res["tpr_plain_thresholds"] = float(((sm >= taus[0]) & (dm >= taus[1])).mean())
    return res


def _impr_of_means(so: np.ndarray, sa: np.ndarray) -> float | None:
    a, b = float(np.mean(so)), float(np.mean(sa))
    return (b - a) / a * 100 if a > 0 else None


def _subset(by_set: dict[str, list[dict[str, Any]]], cfg: Any) -> tuple[str, list[dict[str, Any]]]:
    """The first prompt set and its first ``extra_images`` usable records (by name)."""
    name = cfg.prompt_sets[0]
    return name, sorted(_ok(by_set.get(name, [])), key=lambda r: r["name"])[: cfg.extra_images]


def _paths(folder: Path, recs: list[dict[str, Any]], key: str) -> list[Path]:
    return [folder / r[key] for r in recs]


def _f(v: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1f} %"


# ----------------------------------------------------------------------------- adaptive attacker


def _generate_matched(ctx: Any, recs: list[dict[str, Any]], folder: Path, gcfg: Any, resources: Any,
                      label: str) -> list[dict[str, Any]]:
    """Attack the sources of ``recs`` into ``folder`` (resumable); the new records in ``recs`` order."""

    ctx.generate([r["source"] for r in recs], folder, gcfg, resources, label)
    latest = latest_records(folder)
    return [latest.get(r["source"], {"error": "missing"}) for r in recs]


def adaptive_compute(by_set: dict[str, list[dict[str, Any]]], cfg: Any, ctx: Any) -> dict[str, Any]:
    """Plain vs gray-adaptive vs multi-probe-adaptive attacks, against the gray rule and the multi-probe rule.

    Args:
        by_set: records of the main prompt-set folders.
        cfg: the :class:`foclip_train.reproduce.ReproduceConfig`.
        ctx: the run context (folders, model cache, generation with progress).

    Returns:
        JSON-ready numbers (see :func:`adaptive_markdown`).
    """
    name, plain = _subset(by_set, cfg)
    if len(plain) < 2:
        return {"skipped": f"{len(plain)} usable images in {name}: need at least 2"}
    loaded, bank = ctx.resources(cfg.model, cfg.pretrained, name)
    w = cfg.attack.score_scale
    names = list(PROBES)
    base = ctx.set_dir(name)
    so_all = probe_scores(_paths(base, plain, "original"), loaded, bank, w, names)
    sm_plain = probe_scores(_paths(base, plain, "manipulated"), loaded, bank, w, names)

    # Probe choice: on the other prompt sets' images when they exist (not the ones judged below).
    sel_o, sel_m, where = [], [], "the other prompt sets' plain attacks"
    for other in cfg.prompt_sets[1:]:
        recs = _ok(by_set.get(other, []))
        if recs:
            lo, bo = ctx.resources(cfg.model, cfg.pretrained, other)
            sel_o.append(probe_scores(_paths(ctx.set_dir(other), recs, "original"), lo, bo, w, names))
            sel_m.append(probe_scores(_paths(ctx.set_dir(other), recs, "manipulated"), lo, bo, w, names))
    if not sel_o:
        sel_o, sel_m, where = [so_all], [sm_plain], "the same images (in-sample: no other prompt set was run)"
    chosen, sel_aucs, sel_sep = select_probes(np.concatenate(sel_o), np.concatenate(sel_m), names,
                                              cfg.multi_probes)

    # Each attack: its manipulated images' probe scores and the indices of the plain images they match.
    attacks: dict[str, tuple[np.ndarray, list[int]]] = {"plain": (sm_plain, list(range(len(plain))))}
    for label, probes in (("adaptive-gray", ("gray",)), ("adaptive-multi", tuple(chosen))):
        acfg = dataclasses.replace(cfg.attack, adaptive=probes, adaptive_weight=cfg.adaptive_weight)
        gcfg = dataclasses.replace(cfg.generate_config(name), attack=acfg)
        folder = ctx.out / "adaptive" / f"{slug(name)}-{'+'.join(probes)}-w{cfg.adaptive_weight:g}"
        recs = _generate_matched(ctx, plain, folder, gcfg, (loaded, bank), f"{label} ({name})")
        keep = [i for i, r in enumerate(recs) if not r.get("error")]
        sm = probe_scores(_paths(folder, [recs[i] for i in keep], "manipulated"), loaded, bank, w, names)
        attacks[label] = (sm, keep)

    detectors = {"gray rule": ["gray"], f"multi-probe ({','.join(chosen)})": chosen}
    rows = []
    for det, use in detectors.items():
        do_all = probe_drop(so_all, names, use)
        so_c = so_all[:, 0]
        taus = None
        for label, (sm, keep) in attacks.items():
            so, do = so_c[keep], do_all[keep]
            dm = probe_drop(sm, names, use)
            res = _detect(so, do, sm[:, 0], dm, cfg, taus)
            if label == "plain":
                taus = (res["fit"]["tau_score"], res["fit"]["tau_drop"])
            rows.append({"detector": det, "probes": use, "attack": label, "images": len(keep),
                         "improvement_of_means_pct": _impr_of_means(so, sm[:, 0]),
                         "mean_drop_orig": float(np.mean(do)), "mean_drop_adv": float(np.mean(dm)), **res})
    return {"prompt_set": name, "images": len(plain), "adaptive_weight": cfg.adaptive_weight,
            "multi_probes": chosen, "selection": {"on": where, "auc_drop_per_probe": sel_aucs, "cohens_d_per_probe": sel_sep},
            "target_fpr": cfg.target_fpr, "rows": rows}


def adaptive_markdown(res: dict[str, Any], cfg: Any) -> str:
    """The adaptive-attacker table as markdown."""
    if "skipped" in res:
        return f"Skipped: {res['skipped']}."
    t = res["target_fpr"]
    sel = res["selection"]
    d = sel.get("cohens_d_per_probe", {})
    aucs = ", ".join(f"{q} {a:.3f} (d {d.get(q, float('nan')):.2f})"
                     for q, a in sorted(sel["auc_drop_per_probe"].items(), key=lambda kv: (-kv[1], -d.get(kv[0], 0))))
    lines = [
        (f"Prompt set `{res['prompt_set']}`, {res['images']} images. Attacks: the paper's (plain); "
        f"`--adaptive gray` (the attacker also keeps the grayscale copy aligned, weight "
        f"{res['adaptive_weight']:g}); `--adaptive {','.join(res['multi_probes'])}` (adapted to the "
        "multi-probe detector). Multi-probe detector: tampered when score >= tau_score and the largest "
        f"relative drop over its probes >= tau_drop. Its {len(res['multi_probes'])} probes were chosen as the "
        f"best single-probe drop AUCs (ties broken by Cohen's d of the drop) on {sel['on']}: {aucs}."),
        "",
        (f"AUC (drop): threshold-free ROC-AUC of the detector's drop statistic, manipulated vs originals. "
        f"Held out: the rule calibrated on that attack's own images for a {t:.0%} FPR target, k-fold "
        f"(AUC of the gated statistic; TPR with its Wilson 95 % interval). Plain-calibrated: TPR of "
        "thresholds fitted on the plain attack (the defender has not seen the adaptive one)."),
        "",
        ("| detector | attack | images | improvement of means | drop orig / manip | AUC (drop) | "
        f"AUC held out | TPR at {t:.0%} FPR, held out | TPR, plain-calibrated thresholds |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        h = r["held_out"]
        auc_h = _f(h.get("roc_auc")) if "skipped" not in h else "–"
        tpr_h = (f"{h['tpr']:.0%} [{h['ci95']['tpr'][0]:.0%}, {h['ci95']['tpr'][1]:.0%}]"
                 if "skipped" not in h else h["skipped"])
        tp = r.get("tpr_plain_thresholds")
        lines.append(f"| {r['detector']} | {r['attack']} | {r['images']} | {_pct(r['improvement_of_means_pct'])} | "
                     f"{r['mean_drop_orig']:.1%} / {r['mean_drop_adv']:.1%} | {_f(r['auc_drop'])} | {auc_h} | "
                     f"{tpr_h} | {'(fit set) ' + format(r['fit']['tpr'], '.0%') if tp is None else format(tp, '.0%')} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- transfer


def transfer_compute(by_set: dict[str, list[dict[str, Any]]], cfg: Any, ctx: Any) -> dict[str, Any]:
    """Attack on each model of ``cfg.transfer_models``; score and detect on every one (gray rule).

    A model that cannot be loaded is skipped with a note. The main model's own set is reused when it
    is in the list (same images, same attack).

    Returns:
        ``{"prompt_set", "models", "skipped": [{model, pretrained, reason}], "rows": [per (source, target)]}``.
    """
    name, plain = _subset(by_set, cfg)
    if len(plain) < 2:
        return {"skipped": f"{len(plain)} usable images in {name}: need at least 2"}
    models, skipped = [], []
    for m, p in cfg.transfer_models:
        try:
            models.append((m, p, ctx.resources(m, p, name)))
        except FoclipError as exc:
            skipped.append({"model": m, "pretrained": p, "reason": str(exc)})
            ctx.progress.message(f"transfer: skipping {m} ({p}): {exc}")
    sources = []
    for m, p, res in models:
        if (m, p) == (cfg.model, cfg.pretrained):
            folder, recs = ctx.set_dir(name), plain
        else:
            folder = ctx.out / "transfer" / f"{slug(m)}-{slug(p)}" / slug(name)
            gcfg = dataclasses.replace(cfg.generate_config(name), model=m, pretrained=p)
            recs = _generate_matched(ctx, plain, folder, gcfg, res, f"transfer source {m} ({name})")
        sources.append((m, p, folder, [r for r in recs if not r.get("error")]))
    rows = []
    for sm_, sp, folder, recs in sources:
        for tm, tp, (loaded, bank) in models:
            w = cfg.attack.score_scale
            o = probe_scores(_paths(folder, recs, "original"), loaded, bank, w, ["gray"])
            a = probe_scores(_paths(folder, recs, "manipulated"), loaded, bank, w, ["gray"])
            do, dm = probe_drop(o, ["gray"], ["gray"]), probe_drop(a, ["gray"], ["gray"])
            det = _detect(o[:, 0], do, a[:, 0], dm, cfg) if len(recs) >= 1 else {}
            rows.append({"source": f"{sm_}/{sp}", "target": f"{tm}/{tp}", "images": len(recs),
                         "mean_score_orig": float(o[:, 0].mean()) if len(recs) else None,
                         "mean_score_adv": float(a[:, 0].mean()) if len(recs) else None,
                         "improvement_of_means_pct": _impr_of_means(o[:, 0], a[:, 0]) if len(recs) else None,
                         "mean_drop_orig": float(do.mean()) if len(recs) else None,
                         "mean_drop_adv": float(dm.mean()) if len(recs) else None, **det})
    return {"prompt_set": name, "images": len(plain), "models": [f"{m}/{p}" for m, p, _ in models],
            "skipped": skipped, "target_fpr": cfg.target_fpr, "rows": rows}


def transfer_markdown(res: dict[str, Any], cfg: Any) -> str:
    """The transfer table (source rows x target columns) as markdown."""
    if isinstance(res.get("skipped"), str):
        return f"Skipped: {res['skipped']}."
    lines = [(f"Prompt set `{res['prompt_set']}`, {res['images']} images attacked on each source model "
             "(same attack settings), then scored on each target model with that target's own prompt "
             "embeddings and preprocessing. Cell: improvement of the mean CLIPscore / threshold-free "
             "ROC-AUC of the grayscale drop (manipulated vs originals) / held-out AUC of the two-threshold rule."), ""]
    for s in res["skipped"]:
        lines.append(f"- not run: `{s['model']}` / `{s['pretrained']}`: {s['reason']}")
    if res["skipped"]:
        lines.append("")
    models = res["models"]
    if not models:
        return "\n".join(lines + ["No model could be loaded."])
    cell = {(r["source"], r["target"]): r for r in res["rows"]}
    lines += ["| source \\ target | " + " | ".join(f"`{m}`" for m in models) + " |",
              "|---|" + "---|" * len(models)]
    for s in models:
        cells = []
        for t in models:
            r = cell.get((s, t))
            if r is None:
                cells.append("–")
                continue
            h = r.get("held_out", {})
            cells.append(f"{_pct(r['improvement_of_means_pct'])} / {_f(r.get('auc_drop'))} / "
                         f"{_f(h.get('roc_auc')) if 'skipped' not in h else '–'}")
        lines.append(f"| `{s}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- spectral


def _spectral_one(folder: Path, recs: list[dict[str, Any]], preprocess: Any, drops: tuple[np.ndarray, np.ndarray]
                  ) -> dict[str, Any]:

    orig = [model_view(folder / r["original"], preprocess) for r in recs]
    man = [model_view(folder / r["manipulated"], preprocess) for r in recs]
    return {"images": len(recs), "spectrum": perturbation_spectrum(orig, man),
            "detector_auc": {**spectral_detectors(orig, man), "gray drop": roc_auc(drops[1], drops[0])}}


def spectral_compute(by_set: dict[str, list[dict[str, Any]]], cfg: Any, ctx: Any) -> dict[str, Any]:
    """Perturbation energy by band and YCbCr channel, and spectral detectors vs the gray drop, per attack.

    Originals and manipulated images are both compared in the model's S x S view (the runtime's
    decode, resize and crop), so a model-size output is compared with the same view of its original.
    Attacks: the plain set (every usable image of the first prompt set) and, when the adaptive
    section has run, its attacks.

    Returns:
        ``{"prompt_set", "rows": [{"attack", "images", "spectrum", "detector_auc"}]}``.
    """
    name = cfg.prompt_sets[0]
    plain = sorted(_ok(by_set.get(name, [])), key=lambda r: r["name"])
    if len(plain) < 1:
        return {"skipped": f"no usable image in {name}"}
    loaded, _ = ctx.resources(cfg.model, cfg.pretrained, name)
    runs = [("plain", ctx.set_dir(name), plain)]

    for folder in sorted((ctx.out / "adaptive").glob(f"{slug(name)}-*")) if (ctx.out / "adaptive").is_dir() else []:
        recs = sorted(_ok(list(latest_records(folder).values())), key=lambda r: r["name"])
        if recs:
            runs.append((f"adaptive {folder.name[len(slug(name)) + 1:]}", folder, recs))
    rows = []
    for label, folder, recs in runs:
        drops = (np.array([r["drop_orig"] for r in recs]), np.array([r["drop_adv"] for r in recs]))
        rows.append({"attack": label, **_spectral_one(folder, recs, loaded.preprocess, drops)})
    return {"prompt_set": name, "image_size": loaded.preprocess.image_size, "rows": rows}


def spectral_markdown(res: dict[str, Any], cfg: Any) -> str:
    """The spectral tables as markdown."""
    if "skipped" in res:
        return f"Skipped: {res['skipped']}."
    rows = res["rows"]
    bands = rows[0]["spectrum"]["bands"]
    size = res["image_size"]
    size = size[0] if isinstance(size, (list, tuple)) else size
    lines = [(f"Prompt set `{res['prompt_set']}`; perturbation = manipulated - original, both in the model's "
             f"{size} x {size} view (runtime decode, resize, crop), split into BT.601 Y / Cb / Cr and into "
             "radial frequency bands of the 2-D FFT (cycles per pixel), averaged over the images. Channel "
             "share: fraction of the perturbation's energy; band columns: fraction of that channel's energy."), "",
             "| attack | images | RMS change (0..1) | channel | share of energy | "
             + " | ".join(f"{lo:.3g}-{hi:.3g}" for lo, hi in bands) + " |",
             "|---|---|---|---|---|" + "---|" * len(bands)]
    for r in rows:
        sp = r["spectrum"]
        for i, c in enumerate(("Y", "Cb", "Cr")):
            head = f"| {r['attack']} | {r['images']} | {sp['rms_delta']:.4f} |" if i == 0 else "| | | |"
            lines.append(f"{head} {c} | {sp['channel_share'][c]:.1%} | "
                         + " | ".join(f"{v:.1%}" for v in sp["band_share"][c]) + " |")
    stats = list(rows[0]["detector_auc"])
    lines += ["", ("Single-image detectors (no original needed), ROC-AUC manipulated vs originals (0.5 = chance; "
              "below 0.5 the statistic points the other way; reported as measured). `gray drop` is the "
              "grayscale rule's drop statistic on the same images."), "",
              "| attack | " + " | ".join(f"`{s}`" for s in stats) + " |", "|---|" + "---|" * len(stats)]
    for r in rows:
        lines.append(f"| {r['attack']} | " + " | ".join(_f(r["detector_auc"][s]) for s in stats) + " |")

    lines += ["", "Not offered as detectors: " + "; ".join(f"`{k}` ({v})" for k, v in RETIRED.items()) + "."]
    return "\n".join(lines)
