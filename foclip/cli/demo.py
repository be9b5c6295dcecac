"""`foclip demo`: the main job end to end on real sample photos, offline, with foclip's reference CLIP.

generate (FoCLIP set) -> export (bundle) -> calibrate (thresholds) -> detect (JSONL), each step
through its own CLI command so the demo exercises exactly what users run. Reruns resume: generate
skips finished images and an existing, intact bundle is reused.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from foclip.cli.common import console, echo_command, random_weights_notice
from foclip.cli.generate import config_from_args
from foclip.errors import FoclipError
from foclip.manifest import read_manifest, verify_files
from foclip.outputs import ensure_writable
from foclip.rerun import SettingsChanged


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run generate -> export -> calibrate -> detect on sample photos (offline)",
                       description="The main job end to end, offline, on 7 sample photos with foclip's reference CLIP: "
                                   "each step runs the foclip command a user would type, and a rerun resumes.")
    p.add_argument("--out", default="demo_out", type=Path, help="output folder (default: %(default)s)")
    p.add_argument("--model", default="foclip-ref-vit", help="open_clip model name (default: %(default)s)")
    p.add_argument("--pretrained", default="reference",
                   help="`reference` (foclip's trained CLIP, offline), `random`, a tag or a file "
                        "(default: %(default)s)")
    p.add_argument("--prompts", default=None,
                   help="prompt set (default: `clipart` with --pretrained reference, else `artistic`)")
    p.add_argument("--iters", type=int, default=30,
                   help="FoCLIP steps per image (default: %(default)s; the paper uses 1000)")
    p.add_argument("--quick", action="store_true", help="tiny random model and 10 steps (seconds, for smoke tests)")
    p.set_defaults(func=run)


def write_sample_photos(folder: Path) -> list[Path]:
    """Write the real photos that ship with scikit-image, scikit-learn and matplotlib.

    Args:
        folder: where to write them (created).

    Returns:
        The written files (existing ones are kept).
    """
    from PIL import Image

    from foclip.samples import sample_arrays, short_name

    folder.mkdir(parents=True, exist_ok=True)
    photos = {short_name(k): v for k, v in sample_arrays(7).items()}
    out = []
    for name, arr in photos.items():
        path = folder / f"{name}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(arr).save(tmp)
            tmp.replace(path)
        out.append(path)
    return out


def _step(run_command: Callable[[list[str]], int], title: str, argv: list[str],
          ok_codes: tuple[int, ...] = (0,)) -> int:
    console.rule(f"[bold]{title}[/]")
    echo_command(argv)
    code = run_command(argv)
    if code not in ok_codes:
        raise FoclipError(f"demo step {title!r}", f"exited with code {code}",
                          f"exit code {' or '.join(str(c) for c in ok_codes)}")
    return code


def split_verdicts(detections: Path, originals: Path, manipulated: Path) -> dict[str, dict[str, int]]:
    """Count verdicts per class from ``detections.jsonl`` (an image's class is the folder it came from).

    Args:
        detections: the JSONL written by ``foclip detect --out``.
        originals: the originals folder.
        manipulated: the manipulated folder.

    Returns:
        ``{"original": {...}, "manipulated": {...}}`` with ``images``, ``flagged``, ``clean``, ``unreadable``.
    """

    counts = {k: {"images": 0, "flagged": 0, "clean": 0, "unreadable": 0} for k in ("original", "manipulated")}
    roots = {"original": originals.resolve(), "manipulated": manipulated.resolve()}
    for line in detections.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        path = Path(r["id"]).resolve()
        for cls, root in roots.items():
            if root in path.parents:
                c = counts[cls]
                c["images"] += 1
                c["unreadable" if r["error"] else "flagged" if r["tampered"] else "clean"] += 1
    return counts


def print_split(counts: dict[str, dict[str, int]], bundle: Path) -> None:
    """The demo's answer: how many originals and how many manipulated images were flagged.

    The title names the bundle's model and weights (and says when they are random).
    """

    man = read_manifest(bundle)
    made_by = f"{man.model_name}, weights {man.pretrained}" + (": RANDOM, mechanics only" if man.random_init else "")
    console.print(f"verdicts by class ({escape(made_by)})", highlight=False)  # own line: titles wrap at table width
    t = Table()
    for col in ("class", "images", "flagged", "clean", "unreadable", "meaning"):
        t.add_column(col, justify="left" if col in ("class", "meaning") else "right")
    o, m = counts["original"], counts["manipulated"]
    t.add_row("originals", str(o["images"]), str(o["flagged"]), str(o["clean"]), str(o["unreadable"]),
              f"{o['flagged']} false alarm(s)")
    t.add_row("manipulated", str(m["images"]), str(m["flagged"]), str(m["clean"]), str(m["unreadable"]),
              f"{m['flagged']} caught, {m['clean']} missed")
    console.print(t)


def _bundle_ok(bundle: Path, model: str, pretrained: str) -> bool:
    try:
        manifest = read_manifest(bundle)
    except FoclipError:
        return False
    # A bundle of another model or other weights (e.g. left by `--quick`) must not score this model's images.
    same_weights = manifest.pretrained == pretrained or (pretrained == "random" and manifest.random_init)
    return manifest.model_name == model and same_weights and not verify_files(bundle, manifest)


def _fresh_if_changed(gen: list[str], adv: Path,
                      parse_command: Callable[[list[str]], argparse.Namespace]) -> list[str]:
    """``["--fresh"]`` when the demo's images were made with other settings (e.g. by ``--quick``), else ``[]``.

    A demo rerun with the same settings resumes; one with other settings starts its images over
    instead of stopping at generate's refusal (the demo has no --fresh of its own).
    """
    from foclip_train.generate import check_rerun

    try:
        check_rerun(adv, config_from_args(parse_command(gen)))
    except SettingsChanged:
        console.print(f"note: the images in {adv} were made with other settings: starting them over", highlight=False)
        return ["--fresh"]
    return []


def run(args: argparse.Namespace) -> int:
    out: Path = args.out

    ensure_writable(out, folder=True)  # a file or an unwritable place fails now, in one line
    model, iters = ("foclip-tiny", 10) if args.quick else (args.model, args.iters)
    pretrained = "random" if args.quick else args.pretrained
    prompts = args.prompts or ("clipart" if pretrained == "reference" else "artistic")
    random_weights_notice(pretrained)
    photos = write_sample_photos(out / "photos")
    console.print(f"{len(photos)} sample photos (scikit-image, scikit-learn, matplotlib) in {out / 'photos'}")
    adv, bundle = out / "generated", out / "bundle"
    gen = ["generate", str(out / "photos"), "--out", str(adv), "--model", model, "--pretrained", pretrained,
           "--prompts", prompts, "--iters", str(iters), "--batch", "4"]
    step = functools.partial(_step, args.run_command)
    step("1/4 generate", gen + _fresh_if_changed(gen, adv, args.parse_command))
    if _bundle_ok(bundle, model, pretrained):
        console.rule("[bold]2/4 export[/]")
        console.print(f"reusing the intact bundle in {bundle}")
    else:
        step("2/4 export", ["export", "--out", str(bundle), "--model", model, "--pretrained", pretrained,
                             "--prompts", prompts, "--precision", "fp32,int8", "--force"])
    calibration = out / "calibration.json"
    step("3/4 calibrate", ["calibrate", str(bundle), "--originals", str(adv / "original"),
                            "--manipulated", str(adv / "manipulated"), "--out", str(calibration),
                            "--plots", str(out / "plots"), "--force"])  # recomputed each run
    detections = out / "detections.jsonl"
    step("4/4 detect", ["detect", str(bundle), str(adv / "original"), str(adv / "manipulated"),
                         "--calibration", str(calibration), "--out", str(detections), "--fresh"], ok_codes=(0, 3))
    console.rule()
    print_split(split_verdicts(detections, adv / "original", adv / "manipulated"), bundle)
    console.print(f"adversarial set {adv}/, bundle {bundle}/, calibration {calibration}, "
                  f"detections {detections}, plots {out / 'plots'}/", highlight=False)
    random_weights_notice(pretrained)
    return 0
