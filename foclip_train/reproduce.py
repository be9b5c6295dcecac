"""`foclip reproduce`: the FoCLIP paper's experiments for one model and one image folder.

One run writes a report folder::

    OUT/config.json                 the settings (a rerun with other settings is refused)
    OUT/inputs/                     the sample photos, when no images were given
    OUT/sets/<prompt set>/          a `foclip generate` folder per prompt set (+ trace.jsonl)
    OUT/sections/<name>.json        each report section's numbers, cached by a digest of its inputs
    OUT/figures/*.png               image grid, ROC, drop histograms, score-vs-step curves
    OUT/report.json                 every number
    OUT/REPORT.md                   Tables 1-3 with the paper's figures beside ours

Every attack goes through :func:`foclip_train.generate.run_generate` (so through the one FoCLIP
loop, :func:`foclip_train.attack.foclip_attack`), whose manifest scores are measured as the
detector sees the files (the runtime's decode and preprocessing); detection thresholds and their
held-out evaluation are :mod:`foclip.runtime.stats`'s. Rerunning with the same ``--out``
skips images already done and sections whose inputs did not change.

Sections are entries of :data:`SECTIONS` (a name, a title, a ``compute`` function from the
per-set records, the config and a :class:`SectionContext` to a JSON-ready dict, and a ``markdown``
function): Tables 1-3, then the paper's open questions (:mod:`foclip_train.questions`: adaptive
attacker, cross-model transfer, spectral analysis), whose own attacks live under ``OUT/adaptive/``
and ``OUT/transfer/``. ``ReproduceConfig.sections`` picks which sections run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from foclip.errors import InputError
from foclip.manifest import atomic_write_bytes, atomic_write_json
from foclip_train import questions, wild
from foclip_train.config import AttackConfig, GenerateConfig

__all__ = [
    "DEFAULT_SETS",
    "PAPER",
    "SECTIONS",
    "ProgressSink",
    "ReproduceConfig",
    "Section",
    "SectionContext",
    "run_reproduce",
]

DEFAULT_SETS = ("masterpieces", "artistic", "imagenet-25", "imagenet-50", "imagenet-100")
QUICK_ITERS = 200
FULL_ITERS = 1000
QUICK_EXTRA_IMAGES = 4
SECTION_NAMES = ("table1", "table2", "table3", "adaptive", "transfer", "spectral", "wild")
DEFAULT_SECTIONS = SECTION_NAMES[:-1]  # wild is opt-in (a second attack per image and a clean corpus)
TABLE_SECTIONS = ("table1", "table2", "table3")
DEFAULT_TRANSFER = (("foclip-ref-vit", "reference"), ("foclip-ref-rn", "reference"))
# The paper's headline figures (arXiv 2511.06947), as fractions or percent as labelled.
PAPER = {
    "improvement_pct_masterpieces": 42.7,  # the paper's "artistic" experiment: ten masterpiece prompts
    "improvement_pct_imagenet": 27.3,
    "drop_original": 0.085,
    "drop_manipulated": 0.632,
    "detection_accuracy": 0.91,
}


class ProgressSink(Protocol):
    """Where the library reports progress (the CLI draws rich bars; the default draws nothing)."""

    def start(self, key: str, description: str, total: int) -> None:
        """A task of ``total`` units begins (``key`` identifies it in later calls)."""

    def advance(self, key: str, n: int = 1, info: str = "") -> None:
        """``n`` more units of task ``key`` are done; ``info`` is a short live note."""

    def message(self, text: str) -> None:
        """A one-line note for the user."""


class _Silent:
    def start(self, key: str, description: str, total: int) -> None:
        pass

    def advance(self, key: str, n: int = 1, info: str = "") -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class ReproduceConfig:
    """What `foclip reproduce` runs.

    Attributes:
        model: open_clip model name.
        pretrained: open_clip tag, checkpoint file, ``reference`` or ``random``.
        images: image files/folders; empty: the sample photos that ship with scikit-image,
            scikit-learn and matplotlib (:func:`foclip.samples.sample_photos`).
        max_images: at most this many sample photos (ignored when ``images`` are given).
        prompt_sets: the prompt sets of Table 1.
        attack: the FoCLIP knobs (default: the paper's model-view setting, 1000 steps).
        batch: images optimised together.
        seed: random-init seed, held-out folds and bootstrap.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        target_fpr: FPR target of the detection thresholds (Table 3).
        folds: k of the held-out cross-validation.
        sections: the report sections to compute (names from :data:`SECTION_NAMES`); Tables 1-3
            need every prompt set attacked, the others only the first.
        extra_images: images of the first prompt set used by the adaptive and transfer sections
            (the first ones by name; each costs one attack per extra attacker or source model).
        adaptive_weight: gamma of the adaptive attacks.
        multi_probes: how many probes the multi-probe detector takes (chosen by measurement).
        transfer_models: ``(model, pretrained)`` pairs of the transfer section.
        clean: folders of clean images for the wild section (each subfolder a group; empty: the
            corpus of `foclip data wild`, built into ``OUT/wild/corpus``).
    """

    model: str = "foclip-ref-vit"
    pretrained: str = "reference"
    images: tuple[str, ...] = ()
    max_images: int = 8
    prompt_sets: tuple[str, ...] = DEFAULT_SETS
    attack: AttackConfig = field(default_factory=lambda: AttackConfig(iters=FULL_ITERS, space="model",
                                                                      output="model"))
    batch: int = 8
    seed: int = 0
    device: str = "auto"
    target_fpr: float = 0.05
    folds: int = 5
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    extra_images: int = 8
    adaptive_weight: float = 1.0
    multi_probes: int = 3
    transfer_models: tuple[tuple[str, str], ...] = DEFAULT_TRANSFER
    clean: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "sections", tuple(self.sections))
        object.__setattr__(self, "clean", tuple(str(c) for c in self.clean))
        object.__setattr__(self, "transfer_models", tuple(tuple(m) for m in self.transfer_models))
        bad = [n for n in self.sections if n not in SECTION_NAMES]
        if bad or not self.sections or len(set(self.sections)) != len(self.sections):
            from foclip.errors import did_you_mean

            hints = "".join(did_you_mean(n, SECTION_NAMES) for n in bad)
            raise InputError(f"sections {','.join(self.sections)}", "are not distinct section names" + hints,
                             f"a comma-separated subset of {','.join(SECTION_NAMES)}")
        if self.extra_images < 2:
            raise InputError(f"extra_images={self.extra_images}", "is out of range", "an integer >= 2")
        if not 1 <= self.multi_probes <= 6:
            raise InputError(f"multi_probes={self.multi_probes}", "is out of range", "an integer in 1..6")
        if not self.adaptive_weight >= 0:
            raise InputError(f"adaptive_weight={self.adaptive_weight}", "is out of range", "a number >= 0")
        if not self.transfer_models or any(len(m) != 2 or not all(m) for m in self.transfer_models):
            raise InputError("transfer models", f"are {list(self.transfer_models)!r}",
                             "model:pretrained pairs, e.g. foclip-ref-vit:reference")
        if not self.prompt_sets:
            raise InputError("prompt sets", "are empty", "at least one, e.g. masterpieces")
        if len(set(self.prompt_sets)) != len(self.prompt_sets):
            raise InputError(f"prompt sets {','.join(self.prompt_sets)}", "name a set twice", "each set once")
        if self.max_images < 2:
            raise InputError(f"max_images={self.max_images}", "is out of range", "an integer >= 2")
        if not 0 < self.target_fpr < 1:
            raise InputError(f"target_fpr={self.target_fpr}", "is out of range", "a fraction in (0, 1), e.g. 0.05")

    def generate_config(self, prompt_set: str) -> GenerateConfig:
        """The `foclip generate` settings of one prompt set."""
        return GenerateConfig(model=self.model, pretrained=self.pretrained, prompts=prompt_set, attack=self.attack,
                              batch=self.batch, seed=self.seed, device=self.device)

    def fingerprint(self) -> dict[str, Any]:
        """Settings that change what an already generated image is (a rerun must match them)."""
        d = dataclasses.asdict(self)
        # The extra sections' attacks live in folders named by their own settings (model, probes,
        # weight), so those settings do not change an image already made either.
        for k in ("prompt_sets", "target_fpr", "folds", "device", "sections", "extra_images", "adaptive_weight",
                  "multi_probes", "transfer_models", "clean"):
            d.pop(k)
        return d

    def sets_to_attack(self) -> tuple[str, ...]:
        """Prompt sets whose plain attack the chosen sections need."""
        return self.prompt_sets if any(s in TABLE_SECTIONS for s in self.sections) else self.prompt_sets[:1]


class SectionContext:
    """What a section may use beyond the records: the report folder, a model cache, and attacks.

    Attributes:
        out: the report folder.
        inputs: the image inputs of the run.
        progress: the progress sink.
    """

    def __init__(self, cfg: ReproduceConfig, out: Path, inputs: list[str], progress: ProgressSink) -> None:
        self.cfg, self.out, self.inputs, self.progress = cfg, out, inputs, progress
        self._models: dict[tuple[str, str], Any] = {}
        self._banks: dict[tuple[str, str, str], Any] = {}
        self.wall_s: dict[str, float | None] = {}  # per section, when it was computed (None: unknown)

    def set_dir(self, name: str) -> Path:
        """The `foclip generate` folder of a prompt set's plain attack."""
        return _set_dir(self.out, name)

    def resources(self, model: str, pretrained: str, prompt_set: str) -> tuple[Any, Any]:
        """``(LoadedClip, TorchTextBank)``, loaded once per model and per (model, prompt set).

        Raises:
            ModelError: the model cannot be loaded.
        """
        from foclip.models import load_clip
        from foclip.prompts import load_prompt_set
        from foclip_train.generate import resolve_device
        from foclip_train.text_bank import build_text_bank

        key = (model, pretrained)
        if key not in self._models:
            loaded = load_clip(model, pretrained, device=resolve_device(self.cfg.device), seed=self.cfg.seed)
            if loaded.random_init:
                self.progress.message(f"{model} has RANDOM weights ({loaded.pretrained}): its numbers test "
                                      "mechanics only and say nothing about a trained CLIP")
            self._models[key] = loaded
        bkey = (model, pretrained, prompt_set)
        if bkey not in self._banks:
            self._banks[bkey] = build_text_bank(self._models[key], load_prompt_set(prompt_set, seed=self.cfg.seed))
        return self._models[key], self._banks[bkey]

    def generate(self, inputs: list[str], folder: Path, gcfg: GenerateConfig, resources: tuple[Any, Any],
                 label: str) -> dict[str, Any]:
        """Run `foclip generate` (resumable) with a progress bar; returns its summary."""
        return _generate_one(inputs, folder, gcfg, resources, label, self.progress)


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Section:
    """One part of the report.

    Attributes:
        name: file stem under ``sections/`` and key in report.json.
        title: heading in REPORT.md.
        compute: ``(records by set, config, context) -> dict`` (JSON-ready numbers).
        markdown: ``(numbers, config) -> str`` (the section's body in REPORT.md).
        reads: extra attack folders under OUT (``adaptive``, ``transfer``) whose records are part of
            the section's inputs (its cache key).
    """

    name: str
    title: str
    compute: Callable[[dict[str, list[dict[str, Any]]], ReproduceConfig, SectionContext], dict[str, Any]]
    markdown: Callable[[dict[str, Any], ReproduceConfig], str]
    reads: tuple[str, ...] = ()


def _ok(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if not r.get("error")]


def _mean(vals: Sequence[float | None]) -> float | None:
    v = [x for x in vals if x is not None]
    return statistics.fmean(v) if v else None


def _paper_improvement(name: str) -> tuple[float | None, str]:
    if name == "masterpieces":
        return PAPER["improvement_pct_masterpieces"], "paper's ten artistic-masterpiece prompts"
    if name.startswith("imagenet-"):
        return PAPER["improvement_pct_imagenet"], "paper's ImageNet subsets"
    if name == "artistic":
        return None, "foclip's own set; the paper's artistic figure is beside masterpieces"
    return None, "no paper counterpart"


def table1_compute(by_set: dict[str, list[dict[str, Any]]], cfg: ReproduceConfig,
                   ctx: SectionContext | None = None) -> dict[str, Any]:
    """Table 1: CLIPscore before and after FoCLIP, improvement %, per prompt set."""
    rows = []
    for name, recs in by_set.items():
        ok = _ok(recs)
        impr = [r["improvement_pct"] for r in ok if r.get("improvement_pct") is not None]
        paper, note = _paper_improvement(name)
        so, sa = _mean([r["score_orig"] for r in ok]), _mean([r["score_adv"] for r in ok])
        rows.append({
            "prompt_set": name, "prompt_set_sha256": ok[0]["prompt_set_sha256"] if ok else None,
            "prompt_count": ok[0]["prompt_count"] if ok else None, "images": len(ok),
            "failures": len(recs) - len(ok),
            "mean_score_orig": so, "mean_score_adv": sa,
            # Improvement of the mean scores (as a table of means reads) and the mean of per-image ones.
            "improvement_of_means_pct": (sa - so) / so * 100 if so and sa is not None else None,
            "mean_improvement_pct": statistics.fmean(impr) if impr else None,
            "median_improvement_pct": statistics.median(impr) if impr else None,
            "mean_score_opt": _mean([r.get("score_opt") for r in ok]),
            "mean_best_step": _mean([r.get("best_step") for r in ok]),
            "paper_improvement_pct": paper, "paper_note": note,
        })
    return {"rows": rows, "score_scale": cfg.attack.score_scale}


def _pct(v: float | None, digits: int = 1, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.{digits}f} %" if sign else f"{v:.{digits}f} %"


def _num(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table1_markdown(res: dict[str, Any], cfg: ReproduceConfig) -> str:
    """Table 1 as markdown."""
    w = res["score_scale"]
    lines = [(f"CLIPscore on the 0..{w:g} scale (per-pair clamp, mean over the set's prompts), measured on the "
             "saved files as the detector decodes them. Improvement = (after - before) / before."),
             "",
             ("| prompt set | prompts | images | before | after | improvement of means | median per image | "
             "paper |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        paper = _pct(r["paper_improvement_pct"], sign=True) if r["paper_improvement_pct"] is not None else "–"
        lines.append(f"| {r['prompt_set']} | {r['prompt_count']} | {r['images']} | {_num(r['mean_score_orig'])} | "
                     f"{_num(r['mean_score_adv'])} | {_pct(r['improvement_of_means_pct'], sign=True)} | "
                     f"{_pct(r['median_improvement_pct'], sign=True)} | {paper} ({r['paper_note']}) |")
    return "\n".join(lines)


def _per_set_and_all(by_set: dict[str, list[dict[str, Any]]],
                     row: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per prompt set from its usable records, then one over every set pooled."""
    rows, every = [], []
    for name, recs in by_set.items():
        ok = _ok(recs)
        every += ok
        rows.append({"prompt_set": name, **row(ok)})
    return [*rows, {"prompt_set": "all sets", **row(every)}]


def _drop_row(ok: list[dict[str, Any]]) -> dict[str, Any]:
    return {"images": len(ok), "mean_drop_orig": _mean([r["drop_orig"] for r in ok]),
            "mean_drop_adv": _mean([r["drop_adv"] for r in ok]),
            "median_drop_orig": statistics.median([r["drop_orig"] for r in ok]) if ok else None,
            "median_drop_adv": statistics.median([r["drop_adv"] for r in ok]) if ok else None}


def table2_compute(by_set: dict[str, list[dict[str, Any]]], cfg: ReproduceConfig,
                   ctx: SectionContext | None = None) -> dict[str, Any]:
    """Table 2: grayscale drop of originals vs manipulated images, per set and over all sets."""
    return {"rows": _per_set_and_all(by_set, _drop_row), "paper_drop_orig": PAPER["drop_original"],
            "paper_drop_adv": PAPER["drop_manipulated"]}


def table2_markdown(res: dict[str, Any], cfg: ReproduceConfig) -> str:
    """Table 2 as markdown (drops shown in percent)."""
    p = f"{res['paper_drop_orig'] * 100:.1f} % / {res['paper_drop_adv'] * 100:.1f} %"
    lines = ["Grayscale drop = (score - score_gray) / score; gray = luma 0.299 R + 0.587 G + 0.114 B.", "",
             ("| prompt set | images | originals: mean (median) | manipulated: mean (median) | "
             "paper: originals / manipulated |"), "|---|---|---|---|---|"]
    pc = lambda v: _pct(None if v is None else v * 100)
    for r in res["rows"]:
        lines.append(f"| {r['prompt_set']} | {r['images']} | {pc(r['mean_drop_orig'])} ({pc(r['median_drop_orig'])}) "
                     f"| {pc(r['mean_drop_adv'])} ({pc(r['median_drop_adv'])}) | {p} |")
    return "\n".join(lines)


def _detection(ok: list[dict[str, Any]], cfg: ReproduceConfig) -> dict[str, Any]:
    import numpy as np

    from foclip.runtime.stats import (
        evaluate,
        held_out_evaluation,
        sample_size_warnings,
        search_thresholds,
    )

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


def table3_compute(by_set: dict[str, list[dict[str, Any]]], cfg: ReproduceConfig,
                   ctx: SectionContext | None = None) -> dict[str, Any]:
    """Table 3: detection (score gate + drop threshold) per set and pooled, fit set and held out."""
    rows = _per_set_and_all(by_set, lambda ok: _detection(ok, cfg))
    return {"rows": rows, "target_fpr": cfg.target_fpr, "folds": cfg.folds,
            "paper_accuracy": PAPER["detection_accuracy"]}


def table3_markdown(res: dict[str, Any], cfg: ReproduceConfig) -> str:
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


SECTIONS: list[Section] = [
    Section("table1", "Table 1: CLIPscore before and after FoCLIP", table1_compute, table1_markdown),
    Section("table2", "Table 2: grayscale drop, originals vs manipulated", table2_compute, table2_markdown),
    Section("table3", "Table 3: detection by grayscale drop", table3_compute, table3_markdown),
    Section("adaptive", "Open question 1: an attacker who knows the detector (adaptive attacks, multi-probe "
            "detector)", questions.adaptive_compute, questions.adaptive_markdown, reads=("adaptive",)),
    Section("transfer", "Open question 2: transfer across models", questions.transfer_compute,
            questions.transfer_markdown, reads=("transfer",)),
    Section("spectral", "Open question 3: where the manipulation lives (spatial frequency, luma vs chroma)",
            questions.spectral_compute, questions.spectral_markdown, reads=("adaptive",)),
    Section("wild", "In the wild: false positives on clean traffic, attacks after JPEG and resizing",
            wild.wild_compute, wild.wild_markdown, reads=("wild",)),
]


# ----------------------------------------------------------------------------- running


def _set_dir(out: Path, name: str) -> Path:
    return out / "sets" / (re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._") or "set")


def prepare_inputs(cfg: ReproduceConfig, out: Path) -> list[str]:
    """The images to attack: ``cfg.images``, or the sample photos written once to ``OUT/inputs``.

    Returns:
        Paths (files or folders) for :func:`foclip_train.generate.plan_jobs`.
    """
    if cfg.images:
        return list(cfg.images)
    from foclip.samples import sample_photos

    folder = out / "inputs"
    if not folder.is_dir() or not any(folder.glob("*.png")):
        for name, img in sample_photos(cfg.max_images):
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="PNG")
            atomic_write_bytes(folder / f"{name.replace(':', '_')}.png", buf.getvalue())
    return [str(folder)]


def _check_config(cfg: ReproduceConfig, out: Path) -> None:
    path = out / "config.json"
    mine = json.loads(json.dumps(cfg.fingerprint()))
    if path.is_file():
        theirs = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs or {}) if (theirs or {}).get(k) != mine.get(k))
            raise InputError(f"--out {str(out)!r}", f"holds a run made with other settings ({', '.join(diff)})",
                             "a new --out folder, or the same settings as that run")
    atomic_write_json(path, {"fingerprint": mine, "config": json.loads(json.dumps(dataclasses.asdict(cfg)))})


def _generate_one(inputs: list[str], folder: Path, gcfg: GenerateConfig, resources: tuple[Any, Any], label: str,
                  progress: ProgressSink) -> dict[str, Any]:
    """One extra `foclip generate` run (resumable) with its own progress bar."""
    from foclip_train.generate import plan_jobs, run_generate

    jobs = plan_jobs(inputs, folder, gcfg)
    key = f"gen:{folder}"
    progress.start(key, label, max(len(jobs) * gcfg.attack.iters, 1))
    if not jobs:
        progress.advance(key, 1, "every image already done (resumed)")
    state = {"n": 0}

    def on_step(step: int, scores: list[float] | None) -> None:
        if scores is not None:
            state["n"] = len(scores)
        elif step > 0:
            progress.advance(key, state["n"])

    return run_generate(inputs, folder, gcfg, resources=resources, on_step=on_step, jobs=jobs)


def _generate_sets(cfg: ReproduceConfig, ctx: SectionContext) -> dict[str, Any]:
    """Run `foclip generate` for every prompt set that has work left; returns per-set summaries."""
    from foclip_train.generate import plan_jobs, run_generate

    out, inputs, progress = ctx.out, ctx.inputs, ctx.progress
    names = cfg.sets_to_attack()
    plans = {name: plan_jobs(inputs, _set_dir(out, name), cfg.generate_config(name)) for name in names}
    todo = sum(len(j) for j in plans.values())
    iters = cfg.attack.iters
    progress.start("steps", "FoCLIP image-steps", max(todo * iters, 1))
    if not todo:
        progress.advance("steps", 1, "every image already done (resumed)")
    summaries = {}
    for name in names:
        d, jobs, gcfg = _set_dir(out, name), plans[name], cfg.generate_config(name)
        if not jobs:
            from foclip_train.generate import write_summary

            summaries[name] = write_summary(d) if (d / "manifest.jsonl").is_file() else None
            continue
        loaded, bank = ctx.resources(cfg.model, cfg.pretrained, name)
        trace: list[tuple[int, list[float]]] = []
        state = {"n": 0}

        def on_step(step: int, scores: list[float] | None, _name: str = name,
                    _trace: list = trace, _state: dict = state) -> None:
            if scores is not None:
                _trace.append((step, scores))
                _state["n"] = len(scores)
                progress.advance("steps", 0, f"{_name}: score {sum(scores) / len(scores):.2f}")
            elif step > 0:
                progress.advance("steps", _state["n"])

        def on_batch(records: list[dict[str, Any]], _dir: Path = d, _trace: list = trace) -> None:
            good = [r["name"] for r in records if not r.get("error")]
            line = json.dumps({"names": good, "trace": list(_trace)}) + "\n"
            with open(_dir / "trace.jsonl", "a", encoding="utf-8") as f:  # append-only, like the manifest
                f.write(line)
            progress.advance("steps", iters * (len(records) - len(good)))
            _trace.clear()

        summaries[name] = run_generate(inputs, d, gcfg, resources=(loaded, bank), on_step=on_step,
                                       on_batch=on_batch, jobs=jobs)
    return summaries


def _records_by_set(cfg: ReproduceConfig, out: Path) -> dict[str, list[dict[str, Any]]]:
    from foclip_train.generate import latest_records

    return {name: sorted(latest_records(_set_dir(out, name)).values(), key=lambda r: r["name"])
            for name in cfg.sets_to_attack()}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _extra_records(out: Path, tops: Sequence[str]) -> dict[str, Any]:
    """Latest records of the extra attack folders under ``OUT/<top>`` (part of a section's inputs)."""
    from foclip_train.generate import latest_records

    found = {}
    for top in tops:
        for manifest in sorted((out / top).rglob("manifest.jsonl")) if (out / top).is_dir() else []:
            found[str(manifest.parent.relative_to(out))] = latest_records(manifest.parent)
    return found


def _code_digest(sec: Section) -> str:
    """sha256 of the source file of a section's compute (an edited section recomputes; numbers stay honest)."""
    import inspect

    try:
        return hashlib.sha256(Path(inspect.getfile(sec.compute)).read_bytes()).hexdigest()
    except (OSError, TypeError):
        return "unknown"


def _run_sections(cfg: ReproduceConfig, ctx: SectionContext, by_set: dict[str, list[dict[str, Any]]]
                  ) -> dict[str, Any]:
    """Compute each chosen section, or reuse its cached numbers when its inputs are unchanged;
    a section not chosen is reported when its cached numbers are still valid.

    The cache key is a digest of the plain sets' records, the settings (not the section choice), the
    section's source file and the records of the extra attack folders it reads; a section that made attacks saves the key of its
    finished folders.
    """
    out, progress = ctx.out, ctx.progress
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "sections"}
    key = lambda: _digest({"records": by_set, "cfg": settings, "extra": _extra_records(out, sec.reads),
                           "code": _code_digest(sec), **({"clean": _clean_listing(cfg.clean)} if sec.name == "wild" else {})})
    results = {}
    chosen = [sec for sec in SECTIONS if sec.name in cfg.sections]
    progress.start("sections", "report sections", len(chosen))
    for sec in SECTIONS:
        path = out / "sections" / f"{sec.name}.json"
        cached = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        if cached and cached.get("inputs_digest") == key():
            # Still valid (same inputs, settings and code): reported even when not chosen this run,
            # so running one section does not drop the others from REPORT.md.
            results[sec.name] = cached["result"]
            ctx.wall_s[sec.name] = cached.get("wall_s")
        elif sec in chosen:
            t0 = time.perf_counter()
            results[sec.name] = sec.compute(by_set, cfg, ctx)
            ctx.wall_s[sec.name] = time.perf_counter() - t0  # includes the section's own attacks
            atomic_write_json(path, {"inputs_digest": key(), "result": results[sec.name],
                                     "wall_s": ctx.wall_s[sec.name]})
        if sec in chosen:
            progress.advance("sections", 1, sec.name)
    return results


def _traces(out: Path, names: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """Mean optimiser score per checked step, per prompt set (from trace.jsonl)."""
    curves = {}
    for name in names:
        path = _set_dir(out, name) / "trace.jsonl"
        per_step: dict[int, list[float]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                for step, scores in rec.get("trace", []):
                    per_step.setdefault(step, []).extend(scores)
        curves[name] = [(s, statistics.fmean(v)) for s, v in sorted(per_step.items()) if v]
    return curves


def run_reproduce(cfg: ReproduceConfig, out_dir: str | Path, progress: ProgressSink | None = None,
                  figures: bool = True) -> dict[str, Any]:
    """Run the experiments (skipping finished parts) and write the report folder.

    Args:
        cfg: what to run.
        out_dir: the report folder (created; reruns resume).
        progress: progress sink (the CLI's rich bars); None: silent.
        figures: write the PNG figures (needs matplotlib, ``pip install 'foclip[plots]'``).

    Returns:
        The report dict (also written to ``OUT/report.json``).

    Raises:
        InputError: bad settings, no readable image, or an output folder made with other settings.
        ModelError: the model cannot be loaded.
    """
    progress = progress or _Silent()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_config(cfg, out)
    t0 = time.perf_counter()
    inputs = prepare_inputs(cfg, out)
    ctx = SectionContext(cfg, out, inputs, progress)
    _generate_sets(cfg, ctx)
    by_set = _records_by_set(cfg, out)
    if not any(_ok(r) for r in by_set.values()):
        raise InputError(f"images {' '.join(inputs)!r}", "gave no usable result",
                         "readable image files (see the per-set manifest.jsonl for each error)")
    sections = _run_sections(cfg, ctx, by_set)
    report = {
        "model": cfg.model, "pretrained": cfg.pretrained,
        "random_init": any(r.get("random_init") for recs in by_set.values() for r in _ok(recs)),
        "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
        "prompt_sets": {name: {"sha256": _ok(recs)[0]["prompt_set_sha256"] if _ok(recs) else None,
                               "prompts": _ok(recs)[0]["prompt_count"] if _ok(recs) else None,
                               "images": len(_ok(recs)), "failures": len(recs) - len(_ok(recs))}
                        for name, recs in by_set.items()},
        "paper": dict(PAPER),
        "sections": sections,
        "score_range": _score_range(by_set, cfg),
        "curves": {n: [[s, v] for s, v in c] for n, c in _traces(out, cfg.sets_to_attack()).items()},
        "wall_s_this_run": time.perf_counter() - t0,
        "section_wall_s": {"units": "seconds, when the section was computed (with its own attacks)",
                           **ctx.wall_s},
    }
    if figures:
        from foclip_train.report_figures import write_figures

        report["figures"] = [p.name for p in write_figures(out, cfg, by_set, report, _set_dir)]
    atomic_write_json(out / "report.json", report)
    atomic_write_bytes(out / "REPORT.md", render_markdown(report, cfg).encode("utf-8"))
    return report


def render_markdown(report: dict[str, Any], cfg: ReproduceConfig) -> str:
    """REPORT.md: the setting, then each section's table with the paper's figure beside ours."""
    a = cfg.attack
    weights = ("**random weights: these numbers test the mechanics only and say nothing about the paper's "
               "claims**" if report["random_init"] else "trained weights")
    head = [
        "# foclip reproduce: FoCLIP (arXiv 2511.06947) on this model and these images", "",
        f"- model: `{cfg.model}` / `{cfg.pretrained}` ({weights})",
        f"- images: {'the sample photos (scikit-image, scikit-learn, matplotlib)' if not cfg.images else ', '.join(cfg.images)}",
        (f"- attack: {a.iters} SGD steps, lr {a.lr:g}, momentum {a.momentum:g}, alpha {a.alpha:g}, beta {a.beta:g}, "
        f"optimisation space `{a.space}`, saved at `{a.output}` size, best 8-bit iterate checked every "
        f"{a.check_every} steps"),
        "- prompt sets (sha256 of the prompts): " + ", ".join(
            f"`{n}` ({str(v['sha256'])[:12]}…)" for n, v in report["prompt_sets"].items()),
        "- every number is also in report.json; figures in figures/", "",
    ]
    body = []
    limits = reference_limits_line(report, cfg)
    for sec in SECTIONS:
        if sec.name in report["sections"]:
            body += [f"## {sec.title}", ""] + ([limits, ""] if limits else []) + [
                sec.markdown(report["sections"][sec.name], cfg), ""]
    figs = report.get("figures") or []
    if figs:
        body += ["## Figures", ""] + [f"![{p}](figures/{p})" for p in figs] + [""]
    return "\n".join(head + body)


def reference_limits_line(report: dict[str, Any], cfg: ReproduceConfig) -> str:
    """The one line every section computed on foclip's reference CLIPs carries (issue 23), or ``""``.

    The reference models were trained on ~8 k clip-art and emoji pairs at 64 px: on photos their
    scores sit near the floor, so a score threshold alone separates originals from manipulated
    images, and their numbers stand in for the pipeline's mechanics, not for a web-scale CLIP.
    """
    if cfg.pretrained != "reference":
        return ""
    rng = report.get("score_range") or {}
    span = ""
    if rng.get("original"):
        (o1, o2), (a1, a2) = rng["original"], rng["manipulated"]
        gate = ("so a score threshold alone separates them" if a1 > o2 else "the score ranges overlap")
        span = (f" here originals score {o1:.1f}-{o2:.1f} and manipulated images {a1:.1f}-{a2:.1f} of "
                f"0..{cfg.attack.score_scale:g} on `{rng['prompt_set']}` ({gate});")
    return (f"> Reference model (`{cfg.model}` / `reference`): a 64 px CLIP trained on ~8 k clip-art and emoji pairs;{span} "
            "these numbers check the pipeline's mechanics and the direction of effects, not what a web-scale CLIP "
            "would show (docs/reference.md).")


def _score_range(by_set: dict[str, list[dict[str, Any]]], cfg: ReproduceConfig) -> dict[str, Any]:
    """Lowest and highest score of originals and manipulated images of the first prompt set."""
    first = cfg.prompt_sets[0]
    ok = [r for r in _ok(by_set.get(first, [])) if r.get("score_orig") is not None and r.get("score_adv") is not None]
    if not ok:
        return {"prompt_set": first}
    so, sa = [r["score_orig"] for r in ok], [r["score_adv"] for r in ok]
    return {"prompt_set": first, "original": [min(so), max(so)], "manipulated": [min(sa), max(sa)]}


def _clean_listing(folders: Sequence[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file under the clean folders: edited clean images recompute the wild section."""
    found = []
    for f in folders:
        root = Path(f)
        if root.is_dir():
            found += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()]
    return found
