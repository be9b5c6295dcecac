"""`foclip demo`: the main job end to end on real sample photos, offline, with foclip's reference CLIP.

generate (FoCLIP set) -> export (bundle) -> calibrate (thresholds) -> detect (JSONL), each step
through its own CLI command so the demo exercises exactly what users run. Reruns resume: generate
skips finished images and an existing, intact bundle is reused.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from foclip.cli.common import console, random_weights_notice


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run generate -> export -> calibrate -> detect on sample photos (offline)")
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
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    photos: dict[str, np.ndarray] = {}
    from skimage import data

    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        photos[name] = getattr(data, name)()
    try:
        from sklearn.datasets import load_sample_images

        samples = load_sample_images()  # loads every image: once, not once per attribute
        for fname, arr in zip(samples.filenames, samples.images):
            photos[Path(fname).stem] = arr
    except ImportError:
        pass
    try:
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            photos["grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    except (ImportError, OSError):
        pass
    out = []
    for name, arr in photos.items():
        path = folder / f"{name}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(arr).save(tmp)
            tmp.replace(path)
        out.append(path)
    return out


def _step(title: str, argv: list[str]) -> None:
    from foclip.cli.main import main
    from foclip.errors import FoclipError

    console.rule(f"[bold]{title}[/]")
    console.print("$ foclip " + " ".join(argv), highlight=False, markup=False)
    code = main(argv)
    if code != 0:
        raise FoclipError(f"demo step {title!r}", f"exited with code {code}", "exit code 0")


def _bundle_ok(bundle: Path, model: str) -> bool:
    from foclip.errors import FoclipError
    from foclip.manifest import read_manifest, verify_files

    try:
        manifest = read_manifest(bundle)
    except FoclipError:
        return False
    # A bundle of another model (e.g. left by `--quick`) must not score this model's images.
    return manifest.model_name == model and not verify_files(bundle, manifest)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    model, iters = ("foclip-tiny", 10) if args.quick else (args.model, args.iters)
    pretrained = "random" if args.quick else args.pretrained
    prompts = args.prompts or ("clipart" if pretrained == "reference" else "artistic")
    random_weights_notice(pretrained)
    photos = write_sample_photos(out / "photos")
    console.print(f"{len(photos)} sample photos (scikit-image, scikit-learn, matplotlib) in {out / 'photos'}")
    adv, bundle = out / "generated", out / "bundle"
    _step("1/4 generate", ["generate", str(out / "photos"), "--out", str(adv), "--model", model,
                           "--pretrained", pretrained, "--prompts", prompts, "--iters", str(iters),
                           "--batch", "4"])
    if _bundle_ok(bundle, model):
        console.rule("[bold]2/4 export[/]")
        console.print(f"reusing the intact bundle in {bundle}")
    else:
        _step("2/4 export", ["export", "--out", str(bundle), "--model", model, "--pretrained", pretrained,
                             "--prompts", prompts, "--precision", "fp32,int8", "--no-detect-graph", "--force"])
    calibration = out / "calibration.json"
    _step("3/4 calibrate", ["calibrate", str(bundle), "--originals", str(adv / "original"),
                            "--manipulated", str(adv / "manipulated"), "--out", str(calibration),
                            "--plots", str(out / "plots")])
    _step("4/4 detect", ["detect", str(bundle), str(adv / "original"), str(adv / "manipulated"),
                         "--calibration", str(calibration), "--out", str(out / "detections.jsonl")])
    console.rule()
    console.print(f"done: adversarial set {adv}, bundle {bundle}, calibration {calibration}, "
                  f"detections {out / 'detections.jsonl'}, plots {out / 'plots'}")
    random_weights_notice(pretrained)
    return 0
