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

Sections are the entries of :data:`foclip_train.sections.registry.SECTIONS`, one module each (a
name, a title, a ``run`` from the per-set records, the config and a :class:`SectionContext` to a
JSON-ready dict, a ``table`` to markdown and ``figures`` drawn through :mod:`foclip.plots`):
Tables 1-3, the paper's open questions (adaptive attacker, cross-model transfer, spectral
analysis; attacks under ``OUT/adaptive/`` and ``OUT/transfer/``), the wild section and the
in-domain experiment (``OUT/in-domain/``). This module knows no section by name: it runs the
chosen ones, caches their numbers and assembles report.json and REPORT.md from what they return.
``ReproduceConfig.sections`` picks which sections run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from foclip.errors import InputError, did_you_mean
from foclip.manifest import atomic_write_bytes, atomic_write_json
from foclip_train.config import AttackConfig, GenerateConfig
from foclip_train.sections.base import PAPER, Section, ok_records
from foclip_train.sections.in_domain import IN_DOMAIN_KEYWORD, heldout_images
from foclip_train.sections.registry import DEFAULT_SECTIONS, SECTION_NAMES, SECTIONS, TABLE_SECTIONS
from foclip_train.wild import clean_listing as _clean_listing  # noqa: F401 - the name tests and callers use

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
DEFAULT_TRANSFER = (("foclip-ref-vit", "reference"), ("foclip-ref-rn", "reference"))


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
    in_domain_models: tuple[tuple[str, str], ...] = DEFAULT_TRANSFER
    budget_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sections", tuple(self.sections))
        object.__setattr__(self, "clean", tuple(str(c) for c in self.clean))
        object.__setattr__(self, "transfer_models", tuple(tuple(m) for m in self.transfer_models))
        object.__setattr__(self, "in_domain_models", tuple(tuple(m) for m in self.in_domain_models))
        if self.budget_s is not None and not self.budget_s > 0:
            raise InputError(f"budget_s={self.budget_s}", "is out of range", "a number of seconds > 0")
        bad = [n for n in self.sections if n not in SECTION_NAMES]
        if bad or not self.sections or len(set(self.sections)) != len(self.sections):
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
                  "multi_probes", "transfer_models", "clean", "in_domain_models", "budget_s"):
            d.pop(k)
        return d

    def sets_to_attack(self) -> tuple[str, ...]:
        """Prompt sets whose plain attack the chosen sections need (none when no chosen section reads them)."""
        if any(s in TABLE_SECTIONS for s in self.sections):
            return self.prompt_sets
        plain = any(sec.plain_sets for sec in SECTIONS if sec.name in self.sections)
        return self.prompt_sets[:1] if plain else ()


class SectionContext:
    """What a section may use beyond the records: the report folder, a model cache, and attacks.

    Attributes:
        out: the report folder.
        inputs: the image inputs of the run.
        progress: the progress sink.
        by_set: the plain prompt sets' latest records (filled in before the sections run).
    """

    def __init__(self, cfg: ReproduceConfig, out: Path, inputs: list[str], progress: ProgressSink) -> None:
        self.cfg, self.out, self.inputs, self.progress = cfg, out, inputs, progress
        self.by_set: dict[str, list[dict[str, Any]]] = {}  # the plain sets' latest records, once attacked
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
                 label: str, deadline: float | None = None) -> dict[str, Any]:
        """Run `foclip generate` (resumable) with a progress bar; returns its summary.

        ``deadline`` (``time.monotonic()`` seconds): no batch starts after it; the summary then has
        ``"stopped": True`` and the folder resumes on the next run.
        """
        return _generate_one(inputs, folder, gcfg, resources, label, self.progress, deadline)


# ----------------------------------------------------------------------------- running


def _set_dir(out: Path, name: str) -> Path:
    return out / "sets" / (re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._") or "set")


def prepare_inputs(cfg: ReproduceConfig, out: Path) -> list[str]:
    """The images to attack: ``cfg.images``, or the sample photos written once to ``OUT/inputs``.

    Returns:
        Paths (files or folders) for :func:`foclip_train.generate.plan_jobs`.
    """
    if cfg.images:
        return [str(heldout_images() / "scored") if i == IN_DOMAIN_KEYWORD else i for i in cfg.images]
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
                  progress: ProgressSink, deadline: float | None = None) -> dict[str, Any]:
    """One extra `foclip generate` run (resumable) with its own progress bar, stopped between batches at ``deadline``."""
    from foclip_train.generate import batches, plan_jobs, run_generate

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

    if deadline is None or not jobs:
        return run_generate(inputs, folder, gcfg, resources=resources, on_step=on_step, jobs=jobs)
    summary: dict[str, Any] = {}
    for batch in batches(jobs, gcfg.batch):
        if time.monotonic() > deadline:
            return {**summary, "stopped": True}
        summary = run_generate(inputs, folder, gcfg, resources=resources, on_step=on_step, jobs=batch)
    return summary


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
    """sha256 of the source file of a section's run (an edited section recomputes; numbers stay honest)."""
    try:
        return hashlib.sha256(Path(inspect.getfile(sec.run)).read_bytes()).hexdigest()
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
                           "code": _code_digest(sec), **({"extra_inputs": sec.key_extra(cfg)} if sec.key_extra else {})})
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
            results[sec.name] = sec.run(by_set, cfg, ctx)
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
    ctx.by_set = by_set
    if cfg.sets_to_attack() and not any(ok_records(r) for r in by_set.values()):
        raise InputError(f"images {' '.join(inputs)!r}", "gave no usable result",
                         "readable image files (see the per-set manifest.jsonl for each error)")
    sections = _run_sections(cfg, ctx, by_set)
    report = {
        "model": cfg.model, "pretrained": cfg.pretrained,
        "random_init": any(r.get("random_init") for recs in by_set.values() for r in ok_records(recs))
        or cfg.pretrained == "random",
        "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
        "prompt_sets": {name: {"sha256": ok_records(recs)[0]["prompt_set_sha256"] if ok_records(recs) else None,
                               "prompts": ok_records(recs)[0]["prompt_count"] if ok_records(recs) else None,
                               "images": len(ok_records(recs)), "failures": len(recs) - len(ok_records(recs))}
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
        report["figures"] = [p.name for p in _write_figures(report, cfg, ctx)]
    atomic_write_json(out / "report.json", report)
    atomic_write_bytes(out / "REPORT.md", render_markdown(report, cfg).encode("utf-8"))
    return report


def _write_figures(report: dict[str, Any], cfg: ReproduceConfig, ctx: SectionContext) -> list[Path]:
    """Each reported section's figures under ``OUT/figures`` (drawn through foclip.plots; ``foclip[plots]``)."""
    written = []
    for sec in SECTIONS:
        if sec.figures is not None and sec.name in report["sections"]:
            written += sec.figures(ctx.out / "figures", report["sections"][sec.name], report, cfg, ctx)
    return written


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
                sec.table(report["sections"][sec.name], cfg), ""]
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
    ok = [r for r in ok_records(by_set.get(first, [])) if r.get("score_orig") is not None and r.get("score_adv") is not None]
    if not ok:
        return {"prompt_set": first}
    so, sa = [r["score_orig"] for r in ok], [r["score_adv"] for r in ok]
    return {"prompt_set": first, "original": [min(so), max(so)], "manipulated": [min(sa), max(sa)]}
