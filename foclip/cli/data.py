"""`foclip data wild --out DIR`: build the clean-traffic corpus (photos from Debian packages + generated groups)."""

from __future__ import annotations

import argparse
from typing import Any

from foclip.errors import InputError
from foclip.outputs import ensure_writable


def add_parser(sub: Any) -> None:
    """Register ``foclip data``."""
    p = sub.add_parser("data", help="build data sets foclip measures on (wild: clean traffic for false positives)",
                       description="Data sets that foclip's reports measure on, each with a CSV data card.")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{wild,heldout}")
    h = dsub.add_parser(
        "heldout", help="the reference CLIPs' held-out clip art and emoji (never trained on), with a data card",
        description="Writes DIR/scored/ and DIR/calibration/ (the stratified subset `foclip reproduce --images "
                    "in-domain` uses: 200 scored images, 39 for calibrating the matched attack), DIR/other/ (the rest "
                    "of the held-out split) and DIR/data_card.csv (file, source package, licence, category, caption, "
                    "sha256, role). Needs the Debian packages (sudo apt-get install openclipart-png "
                    "fonts-noto-color-emoji); without them the subset that ships with foclip is copied.")
    h.add_argument("--out", required=True, metavar="DIR", help="folder (created; reruns keep what is there)")
    h.set_defaults(func=run_heldout)
    w = dsub.add_parser(
        "wild", help="clean-traffic corpus: wallpaper photos and art from Debian packages, grayscale, sepia and "
                     "saturated photos, screenshots with text",
        description="Writes DIR/<group>/ images and DIR/data_card.csv (package, version, licence, transformation "
                    "per file). Photos and art come from openly licensed Debian wallpaper packages "
                    "(sudo apt-get install mate-backgrounds plasma-workspace-wallpapers lomiri-wallpapers-20.04 "
                    "ukui-wallpapers gnome-backgrounds); packages not installed are skipped. Use it as "
                    "`foclip reproduce --sections wild --clean DIR` or `foclip calibrate --clean DIR`.")
    w.add_argument("--out", required=True, metavar="DIR", help="corpus folder (created; rerun rewrites it)")
    w.add_argument("--screenshots", type=int, default=24, help="synthetic screenshots/slides (default: %(default)s)")
    w.add_argument("--max-side", type=int, default=768, help="longest side in pixels (default: %(default)s)")
    w.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the corpus and print its counts per group."""
    from rich.markup import escape

    from foclip.cli.common import console, err_console
    from foclip_train.wild_corpus import build_corpus

    if args.screenshots < 0:
        raise InputError(f"--screenshots {args.screenshots}", "is out of range", "an integer >= 0")
    if args.max_side < 32:
        raise InputError(f"--max-side {args.max_side}", "is out of range", "an integer >= 32")
    ensure_writable(args.out, folder=True)  # a file as --out, or an unwritable place: one line, before any work
    res = build_corpus(args.out, screenshots=args.screenshots, max_side=args.max_side,
                       progress=lambda line: err_console.print(escape(line), highlight=False))
    for what, why in res["skipped"].items():
        err_console.print(f"[yellow]skipped:[/] {escape(what)} ({escape(why)})", highlight=False)
    console.print(", ".join(f"{g} {n}" for g, n in res["counts"].items()), highlight=False)
    console.print(f"wrote {args.out} and {res['data_card']}", highlight=False)
    return 0


def run_heldout(args: argparse.Namespace) -> int:
    """Write the held-out split and print its counts per role."""
    from pathlib import Path

    from rich.markup import escape

    from foclip.cli.common import console, err_console
    from foclip.outputs import ensure_writable
    from foclip_train.reference.data import materialise_heldout

    ensure_writable(args.out, folder=True)
    res = materialise_heldout(Path(args.out))
    if res["missing"]:
        err_console.print(f"[yellow]Debian packages missing[/] ({escape(res['missing'])}): copied the shipped "
                          "subset only", highlight=False)
    console.print(f"{res['source']}: " + ", ".join(f"{k} {v}" for k, v in sorted(res["counts"].items())),
                  highlight=False)
    console.print(f"wrote {args.out} and {Path(args.out) / 'data_card.csv'}", highlight=False)
    return 0
