"""`foclip calibrate BUNDLE --originals DIR --manipulated DIR`: choose tau_score / tau_drop on labelled images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from foclip.cli.common import STRICT_HELP, claims_output


def add_parser(sub: Any) -> None:
    """Register the ``calibrate`` sub-command."""
    from foclip.scoring import DEFAULT_PROBES

    p = sub.add_parser(
        "calibrate", help="choose detection thresholds on originals and manipulated images",
        description="Scores originals and manipulated images with the runtime, chooses tau_score and "
                    "tau_drop (target FPR on originals, or maximum accuracy) and writes calibration.json. "
                    "A `foclip generate` output folder (with original/ and manipulated/) works as input.")
    p.add_argument("bundle", help="bundle folder written by `foclip export`")
    p.add_argument("--originals", required=True,
                   help="folder of original images, or a `foclip generate` output folder")
    p.add_argument("--manipulated", default=None,
                   help="folder of manipulated images (default: <originals>/manipulated of a generate folder)")
    p.add_argument("--target-fpr", type=float, default=0.05, help="false-positive rate on originals (default 0.05)")
    p.add_argument("--mode", choices=("fpr", "max-accuracy"), default="fpr",
                   help="fpr: best TPR at the target FPR (default); max-accuracy: best accuracy")
    p.add_argument("--out", default="calibration.json", help="output file (default calibration.json)")
    p.add_argument("--plots", default=None, help="write roc.png and histograms here (needs foclip[plots])")
    p.add_argument("--backend", default="ort-cpu", help="ort-cpu | ort-cuda | trt (default ort-cpu)")
    p.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8 (default fp32)")
    p.add_argument("--prompts", default=None, help="text bank or prompt file (default: the bundle's first bank)")
    p.add_argument("--batch", type=int, default=32, help="images per encoder call (default 32)")
    p.add_argument("--probes", default=",".join(DEFAULT_PROBES),  # scoring owns the default
                   help="colour-space probes the thresholds apply to (default gray: the paper's rule); "
                        "e.g. gray,hue180,swap-rb for the multi-probe statistic")
    p.add_argument("--no-self-check", action="store_true",
                   help="skip the start-up parity self-check of the graph on this machine")
    p.add_argument("--folds", type=int, default=5,
                   help="k of the seeded k-fold held-out evaluation (default 5; 0 turns it off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out folds and the AUC bootstrap (default 0)")
    p.add_argument("--clean", default=None, metavar="DIR",
                   help="clean traffic (e.g. `foclip data wild --out DIR`): its images join the originals, so the "
                        "FPR target is set on traffic-like images; each subfolder is a group whose fit-set and "
                        "held-out FPR are printed")
    p.add_argument("--strict", action="store_true", help=STRICT_HELP)
    p.add_argument("--force", action="store_true",
                   help="replace an --out calibration made with other settings (bundle, precision, prompts, probes, "
                        "folders, target, mode, folds, seed); without it such a rerun is refused")
    p.set_defaults(func=run)


def resolve_class_dirs(originals: str, manipulated: str | None) -> tuple[Path, Path]:
    """Find the originals and manipulated folders, accepting `foclip generate` output folders.

    Args:
        originals: a folder of originals, or a generate folder holding ``original/``.
        manipulated: a folder of manipulated images, a generate folder holding ``manipulated/``,
            or ``None`` when ``originals`` is a generate folder.

    Returns:
        ``(originals_dir, manipulated_dir)``.

    Raises:
        InputError: a folder is missing, or ``manipulated`` is not given and cannot be inferred.
    """
    from foclip.errors import InputError

    o = Path(originals).expanduser()
    if not o.is_dir():
        raise InputError(f"--originals {originals!r}", "is not a folder",
                         "a folder of original images or a `foclip generate` output folder")
    gen = o if (o / "original").is_dir() else None
    if gen is not None:
        o = gen / "original"
    if manipulated is None:
        if gen is None or not (gen / "manipulated").is_dir():
            raise InputError("--manipulated", "is missing and --originals is not a generate folder",
                             "--manipulated DIR, or --originals pointing at a folder with original/ and manipulated/")
        return o, gen / "manipulated"
    m = Path(manipulated).expanduser()
    if not m.is_dir():
        raise InputError(f"--manipulated {manipulated!r}", "is not a folder",
                         "a folder of manipulated images or a `foclip generate` output folder")
    if (m / "manipulated").is_dir():
        m = m / "manipulated"
    return o, m


def refuse_same_sets(originals: list[str], manipulated: list[str], orig_dir: Path, man_dir: Path) -> None:
    """Refuse originals and manipulated images that are the same files (by sha256): nothing to tell apart.

    Args:
        originals: the original images found.
        manipulated: the manipulated images found.
        orig_dir: their folder (for the message).
        man_dir: see ``orig_dir``.

    Raises:
        InputError: both sets hold the same contents (files that cannot be read are left to the scoring).
    """
    from foclip.errors import InputError
    from foclip.manifest import sha256_file

    def digests(paths: list[str]) -> set[str]:
        out = set()
        for p in paths:
            try:
                out.add(sha256_file(p))
            except OSError:
                continue
        return out

    o = digests(originals)
    if o and o == digests(manipulated):
        raise InputError(f"--originals {str(orig_dir)!r} and --manipulated {str(man_dir)!r}",
                         f"hold the same {len(o)} image(s) (equal sha256): there is nothing to tell apart",
                         "manipulated images made from the originals, e.g. the manipulated/ folder of "
                         "`foclip generate`")


def _score_folder(det: Any, paths: list[str], label: str, progress: Any) -> tuple[Any, Any, int]:
    import numpy as np

    task = progress.add_task(label, total=len(paths))
    scores, drops, errors = [], [], 0
    for r in det.detect_iter(paths):
        if r.ok and r.statistic is not None:
            scores.append(r.score_color)
            drops.append(r.statistic)  # the gray drop, or the largest probe drop with several probes
        else:
            errors += 1
        progress.advance(task)
    return np.asarray(scores), np.asarray(drops), errors


@claims_output("foclip calibrate", "out", "plots")
def run(args: argparse.Namespace) -> int:
    """Score both classes, fit thresholds, print the report, write calibration.json (+ plots)."""
    import dataclasses

    import numpy as np
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from foclip.cli.common import console, err_console, random_weights_notice
    from foclip.cli.progress import make_progress
    from foclip.errors import InputError
    from foclip.runtime import Detector, fit_calibration
    from foclip.runtime.stats import clean_group_evaluation

    if not 0.0 <= args.target_fpr < 1.0:  # checked before scoring, not after
        raise InputError(f"--target-fpr {args.target_fpr}", "is out of range", "a fraction in [0, 1), e.g. 0.05")
    if args.folds < 0 or args.folds == 1:
        raise InputError(f"--folds {args.folds}", "is out of range", "0 (off) or an integer >= 2, e.g. 5")
    orig_dir, man_dir = resolve_class_dirs(args.originals, args.manipulated)
    from foclip.cli.common import report_skipped
    from foclip.runtime.inputs import Skipped, clean_groups, expand_inputs

    skipped = Skipped()  # every folder is scanned once, now: what is skipped is said before scoring
    originals = list(expand_inputs([str(orig_dir)], skipped))
    manipulated = list(expand_inputs([str(man_dir)], skipped))
    groups = clean_groups(args.clean, skipped) if args.clean else None  # an empty clean folder fails now
    report_skipped(skipped, args.strict, "the --originals, --manipulated and --clean folders")
    refuse_same_sets(originals, manipulated, orig_dir, man_dir)
    from foclip.cli.common import ensure_writable
    from foclip.outputs import refuse_overwriting_inputs

    refuse_overwriting_inputs(args.out, folders=[args.bundle])
    ensure_writable(args.out)  # a read-only or missing destination fails now, not after scoring
    if args.plots:
        ensure_writable(args.plots, folder=True)
    det = Detector.from_bundle(args.bundle, backend=args.backend, precision=args.precision,
                               prompts=args.prompts, batch_size=args.batch, graph="encoder",
                               probes=tuple(p.strip() for p in args.probes.split(",") if p.strip()),
                               self_check=not args.no_self_check)
    random_weights_notice(det.manifest.pretrained)
    settings = _settings(det, args, orig_dir, man_dir)
    if not args.force:
        try:
            check_rerun(args.out, settings)
        except BaseException:
            det.close()
            raise
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with det, make_progress(*columns, console=err_console) as progress:
        so, do, eo = _score_folder(det, originals, "originals", progress)
        sm, dm, em = _score_folder(det, manipulated, "manipulated", progress)
        clean = _score_clean(det, groups, progress) if groups else None
    if clean is not None and not len(clean[0]):
        raise InputError(f"--clean {args.clean!r}", f"holds no readable image: all {sum(clean[3].values())} "
                         f"file(s) failed ({clean[4]})", "image files PIL can read (JPEG, PNG, WebP, GIF, BMP, TIFF)")
    bank = det.text_bank
    if clean is not None:  # the clean images are negatives too: the FPR target covers them
        n_lab_o = len(so)
        so, do = np.concatenate([so, clean[0]]), np.concatenate([do, clean[1]])
    cal = fit_calibration(
        so, do, sm, dm, bundle_hash=det.bundle.bundle_hash, backend=det.config.backend,
        precision=det.config.precision, score_scale=det.score_scale,
        text_bank={"name": bank.name, "sha256": bank.sha256, "count": len(bank.prompts)},
        target_fpr=args.target_fpr, mode=args.mode, folds=args.folds, seed=args.seed,
        extra_metrics={"errors": {"original": eo, "manipulated": em},
                       "random_init": det.manifest.random_init, "model_name": det.manifest.model_name,
                       "originals_dir": str(orig_dir), "manipulated_dir": str(man_dir), "settings": settings})
    cal = dataclasses.replace(cal, graph=det.graph_key, probes=tuple(det.config.probes))
    if clean is not None:
        cal.metrics["clean_groups"] = clean_group_evaluation(
            so[:n_lab_o], do[:n_lab_o], sm, dm, clean[0], clean[1], clean[2], cal.tau_score, cal.tau_drop,
            args.target_fpr, args.mode, max(args.folds, 2), args.seed)
        cal.metrics["clean_dir"] = str(args.clean)
        cal.metrics["clean_errors"] = sum(clean[3].values())
        cal.metrics["clean_unreadable"] = clean[3]  # per group, every group listed
    cal.save(args.out)
    console.print(results_table(cal, det.manifest.model_name, det.manifest.pretrained, args.target_fpr, eo, em))
    warn_floor(det, so)
    for line in cal.metrics.get("warnings", []):
        err_console.print(f"[yellow]small sample:[/] {escape(line)}", highlight=False)
    for line in cal.metrics.get("threshold_warnings", []):
        err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False)
    if "clean_groups" in cal.metrics:
        console.print(clean_table(cal.metrics["clean_groups"], cal.target_fpr if cal.mode == "fpr" else None,
                                  cal.metrics.get("clean_unreadable")))
    console.print(f"wrote {args.out}", highlight=False)
    if args.plots:
        from foclip.plots import save_plots  # matplotlib: the plots extra, only when asked for

        m_ = det.manifest
        label = f"{m_.model_name}, weights {m_.pretrained}" + (" (RANDOM: mechanics only)" if m_.random_init else "")
        for path in save_plots(args.plots, so, do, sm, dm, cal, label=label):
            console.print(f"wrote {path}", highlight=False)
    return 0


def _score_clean(det: Any, clean: dict[str, list[str]], progress: Any
                 ) -> tuple[Any, Any, list[str], dict[str, int], str]:
    """Score every group of a clean folder.

    Returns:
        ``(scores, drops, group per image, unreadable files per group, the first reasons as one phrase)``.
    """
    import numpy as np

    scores, drops, groups, errors, reasons = [], [], [], {}, []
    for name, paths in clean.items():
        task = progress.add_task(f"clean: {name}", total=len(paths))
        errors[name] = 0
        for r in det.detect_iter(paths):
            if r.ok and r.statistic is not None:
                scores.append(r.score_color)
                drops.append(r.statistic)
                groups.append(name)
            else:
                errors[name] += 1
                if len(reasons) < 2 and r.error:
                    reasons.append(f"{Path(r.id).name}: {r.error['code']}")
            progress.advance(task)
    return (np.asarray(scores, np.float64), np.asarray(drops, np.float64), groups, errors,
            "; ".join(reasons) or "no score")


def clean_table(rows: dict[str, Any], target_fpr: float | None, unreadable: dict[str, int] | None = None) -> Any:
    """Per clean group: images, unreadable files, fit-set FPR and held-out FPR with Wilson 95 % intervals.

    Args:
        rows: ``metrics["clean_groups"]`` (see :func:`foclip.runtime.stats.clean_group_evaluation`).
        target_fpr: the FPR target (``fpr`` mode), shown in the title.
        unreadable: files per group that could not be scored (``metrics["clean_unreadable"]``); a
            group with no readable image gets a row of its own.

    Returns:
        A rich Table.
    """
    from rich.markup import escape
    from rich.table import Table

    title = "false positives on clean traffic" + (f" (target {target_fpr:.1%})" if target_fpr is not None else "")
    table = Table(title=title)
    for col in ("group", "images", "unreadable", "FPR, fit set", "FPR, held out"):
        # the names and counts stay whole on a narrow terminal; the interval cells wrap instead
        table.add_column(col, justify="left" if col == "group" else "right", no_wrap=not col.startswith("FPR"),
                         min_width=len(col) if not col.startswith("FPR") else None)

    def cell(fp: int, n: int, ci: Any) -> str:
        return f"{fp}/{n} = {fp / n:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"

    unreadable = unreadable or {}
    for name in [*rows, *(g for g in unreadable if g not in rows)]:
        bad = str(unreadable[name]) if name in unreadable else "-"
        r = rows.get(name)
        if r is None:  # every file of the group was unreadable
            table.add_row(escape(name), "0", f"[yellow]{bad}[/]", "-", "-")
            continue
        held = cell(r["held_out_fp"], r["n"], r["held_out_ci95"]) if "held_out_fp" in r else "-"
        table.add_row(escape(name), str(r["n"]), f"[yellow]{bad}[/]" if unreadable.get(name) else bad,
                      cell(r["fit_fp"], r["n"], r["fit_ci95"]), held)
    table.caption = ("images: scored; unreadable: files that could not be read (in no rate); fit set: thresholds "
                     "chosen on originals + these clean images; held out: each clean image judged by thresholds "
                     "chosen without its fold; [Wilson 95 %]")
    return table


def _settings(det: Any, args: argparse.Namespace, orig_dir: Path, man_dir: Path) -> dict[str, Any]:
    """The settings that define a calibration (kept under ``metrics.settings``; a rerun compares them)."""
    return {"bundle_hash": det.bundle.bundle_hash, "backend": det.config.backend, "precision": det.config.precision,
            "prompts": det.text_bank.name, "prompts_sha256": det.text_bank.sha256[:12],
            "probes": list(det.config.probes), "originals": str(orig_dir.resolve()),
            "manipulated": str(man_dir.resolve()), "target_fpr": args.target_fpr, "mode": args.mode,
            "folds": args.folds, "seed": args.seed,
            "clean": str(Path(args.clean).resolve()) if args.clean else None}


def check_rerun(out: str, settings: dict[str, Any]) -> None:
    """Refuse to replace a calibration made with other settings (unless ``--force``).

    A file without recorded settings (not a calibration, or one from an older foclip) is replaced
    as before.

    Raises:
        SettingsChanged: one line naming each differing setting and ``--force``.
    """
    import json

    from foclip.rerun import refuse_changed

    try:
        old = json.loads(Path(out).read_text(encoding="utf-8"))["metrics"]["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if isinstance(old, dict):
        refuse_changed(f"--out {out!r}", "a calibration", old, settings, "--force to replace it",
                       same="the same settings (it is computed again)")


def warn_floor(det: Any, score_orig: Any) -> None:
    """Warn when the text bank scores near the floor on the bundle's reference photos or on the originals."""
    import json

    from rich.markup import escape

    from foclip.cli.common import err_console
    from foclip.scoring import floor_warning

    if det.manifest.random_init:  # the random-weights note already says every score is meaningless
        return
    name, scale = det.text_bank.name, det.score_scale
    try:  # the export's PyTorch figures (read as JSON: calibrate stays torch-free)
        report = json.loads((Path(det.bundle.path) / "parity.json").read_text(encoding="utf-8"))
        fig = report["image_encoder"]["fp32"]["banks"][name]
        fig = fig if isinstance(fig.get("ref_mean_score_color"), (int, float)) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        fig = None
    n = len(det.manifest.reference.photos) if det.manifest.reference else 0
    figures = [(fig["ref_mean_score_color"], f"the bundle's {n} reference photos")] if fig else []
    if len(score_orig):
        figures.append((float(score_orig.mean()), f"the {len(score_orig)} originals"))
    for mean, images in figures:
        line = floor_warning(name, mean, scale, images)
        if line:
            err_console.print(f"[bold yellow]warning:[/] {escape(line)}.", highlight=False, soft_wrap=True)


def _pct_ci(value: float, ci: Any) -> str:
    return f"{value:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"


def results_table(cal: Any, model_name: str, pretrained: str, target_fpr: float, eo: int, em: int) -> Any:
    """The calibration report: fit-set figures next to held-out ones (with 95 % intervals).

    Args:
        cal: the :class:`foclip.runtime.Calibration`.
        model_name: model shown in the title.
        pretrained: weights shown in the title.
        target_fpr: the FPR target asked for.
        eo: unreadable originals.
        em: unreadable manipulated images.

    Returns:
        A rich Table.
    """
    from rich.table import Table

    m, h = cal.metrics, cal.metrics.get("held_out", {})
    table = Table(title=f"foclip calibrate: {model_name} ({pretrained}), {cal.backend}/{cal.precision}, "
                        f"mode {cal.mode}")
    table.add_column("measure")
    table.add_column("fit set", justify="right", no_wrap=True)
    table.add_column(f"held out ({h['folds']}-fold)" if "folds" in h else "held out", justify="right",
                     no_wrap=True)
    skipped = h.get("skipped")

    def held(key: str, fmt: Any = _pct_ci) -> str:
        if skipped:
            return "-"
        return fmt(h[key], h["ci95"][key])

    target = f" (target {target_fpr:.1%})" if cal.mode == "fpr" else ""
    rows = [
        ("originals / manipulated (scored)", f"{m['n_originals']} / {m['n_manipulated']}",
         "-" if skipped else f"{h['n_originals']} / {h['n_manipulated']}"),
        ("unreadable originals / manipulated", f"{eo} / {em}", ""),
        (f"tau_score (0..{cal.score_scale:g})", f"{cal.tau_score:.4f}",
         "-" if skipped else "{:.4f}..{:.4f} over folds".format(*h["tau_score_range"])),
        ("tau_drop (fraction)", f"{cal.tau_drop:.4f}",
         "-" if skipped else "{:.4f}..{:.4f} over folds".format(*h["tau_drop_range"])),
        ("TPR (manipulated flagged)", f"{m['tpr']:.1%}", held("tpr")),
        ("FPR (originals flagged)" + target, f"{m['fpr']:.1%}", held("fpr")),
        ("accuracy", f"{m['accuracy']:.1%}", held("accuracy")),
        ("ROC-AUC (drop gated at tau_score)", f"{m['roc_auc']:.4f}",
         held("roc_auc", lambda v, ci: f"{v:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]")),
        ("ROC-AUC drop alone / score alone", f"{m['roc_auc_drop']:.4f} / {m['roc_auc_score']:.4f}", ""),
        ("TPR at 1% / 5% FPR", f"{m['tpr_at_fpr']['0.01']:.1%} / {m['tpr_at_fpr']['0.05']:.1%}", ""),
        (f"mean score_color orig / manip (0..{cal.score_scale:g})",
         f"{m['mean_score_color']['original']:.3f} / {m['mean_score_color']['manipulated']:.3f}", ""),
        ("mean drop orig / manip (ours)", f"{m['mean_drop']['original']:.1%} / {m['mean_drop']['manipulated']:.1%}",
         ""),
        ("mean drop orig / manip (FoCLIP paper)",
         f"{m['paper_mean_drop']['original']:.1%} / {m['paper_mean_drop']['manipulated']:.1%}", ""),
    ]
    for row in rows:
        table.add_row(*row)
    table.caption = ("fit set: the images the thresholds were chosen on (optimistic); held out: each fold judged "
                     "by thresholds chosen on the others, [95 % interval: Wilson for rates, bootstrap for AUC]"
                     if not skipped else f"held out: {skipped}")
    return table
