"""Build the reference CLIP's image-text pairs from two openly licensed Debian packages.

* ``openclipart-png`` (public domain): clip art under ``/usr/share/openclipart/png/<category>/...``.
  Captions come from the category path and the file name, cleaned of author names, counters and
  suffixes (most names are ``<title>_<author>_<NN>``, the stem cut at 24 characters).
* ``fonts-noto-color-emoji`` (SIL OFL 1.1): every single-code-point emoji with a glyph and a
  Unicode name, rendered with Pillow and captioned with its name.

The output folder holds ``images/``, ``train.csv`` and ``heldout.csv`` (columns ``filepath``,
``caption``, ``source``, ``category``), ``data_card.json`` and ``data_card.md``. The split is by
image (a hash of the source path), so a held-out image is never seen in training; exact duplicate
files are dropped first so that a copy cannot sit on both sides.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from foclip.errors import InputError, require
from foclip.manifest import sha256_file

CLIPART_ROOT = Path("/usr/share/openclipart/png")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
APT_LINE = "`sudo apt-get install openclipart-png fonts-noto-color-emoji`"
# Pillow refuses to decode more than this many pixels (decompression-bomb guard). The largest
# openclipart PNGs reach ~168 Mpx (~670 MB as RGBA); we skip anything above this bound before
# decoding, from the header alone, and count the skips in the data card.
MAX_PIXELS = 16_000_000
# Directories that only repeat images found elsewhere.
SKIP_DIRS = frozenset({"duplicates"})
EMOJI_RANGES = ((0x1F300, 0x1FAFF), (0x2600, 0x27BF))
# Captions must fit a 32-token text context; names are short, this only guards odd ones.
MAX_CAPTION_WORDS = 16


@dataclass(frozen=True)
class BuildConfig:
    """Knobs of one data build.

    Attributes:
        image_size: side of the square images written (the model's input size).
        heldout_fraction: share of images held out (by image), at least 0.10.
        seed: salt of the split hash; changing it gives another split.
        clipart_root: openclipart's PNG tree.
        emoji_font: Noto Color Emoji font file; None leaves emoji out (tests on synthetic trees).
        max_pixels: images with more pixels are skipped before decoding.
    """

    image_size: int = 64
    heldout_fraction: float = 0.12
    seed: int = 0
    clipart_root: Path = CLIPART_ROOT
    emoji_font: Path | None = EMOJI_FONT
    max_pixels: int = MAX_PIXELS


@dataclass
class Pair:
    """One image-text pair before and after rendering."""

    source: str  # "openclipart" | "noto-emoji"
    key: str  # stable id: path relative to the clip-art root, or the emoji's code point
    caption: str
    category: str  # top-level clip-art category, or "emoji"
    filepath: str = ""  # relative to the output folder, once written
    split: str = ""


@dataclass
class BuildReport:
    """What a build did: counts and reasons for skipping."""

    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)


def check_sources(cfg: BuildConfig) -> None:
    """Fail with one line naming the apt-get line when a source package is missing.

    Raises:
        InputError: the clip-art tree or the emoji font is absent.
    """
    if not cfg.clipart_root.is_dir():
        raise InputError(f"clip-art folder {str(cfg.clipart_root)!r}", "does not exist",
                         f"the Debian packages installed: {APT_LINE}")
    if cfg.emoji_font is not None and not cfg.emoji_font.is_file():
        raise InputError(f"emoji font {str(cfg.emoji_font)!r}", "does not exist",
                         f"the Debian packages installed: {APT_LINE}")


# ----------------------------------------------------------------------------------------- captions
_SUFFIX = re.compile(r"_(?:\d{1,2}[a-z]?|r|)$")
# openclipart-png cut "<title>_<author first>_<author last>" at 24 characters and appended a
# counter (`_01`), an `_r` or a bare `_`; a stem of 20+ characters before that ends in an author.
_AUTHOR_CUT = 20
# Authors and other non-descriptive tokens that survive the rule above (read off the real names).
_NOISE = frozenset({
    "ganson", "architetto", "architet", "architett", "franc", "fran", "francesco", "arch", "nicu",
    "bw", "bwh", "alt", "ftg", "openclipart", "clipart", "clip", "art", "svg", "png", "icon",
    "theme", "gnome", "mime", "step", "pt", "aiello", "massimo", "renardjb", "free",
})
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _words(text: str) -> list[str]:
    # Split camelCase, drop digits and punctuation: "star_95pt06step" -> star, pt, step.
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text).lower()
    return _WORD.findall(text)


def clean_title(stem: str) -> str:
    """The descriptive part of an openclipart file name.

    Args:
        stem: the file name without ``.png`` (e.g. ``light_bulb_karl_bartel_01``).

    Returns:
        Lower-case words without author names, counters or suffixes (``light bulb``); may be empty.
    """
    base = stem
    m = _SUFFIX.search(base)
    if m and m.start() >= _AUTHOR_CUT - 1:  # counter-suffixed, cut at 24 chars: author at the end
        parts = base[: m.start()].split("_")
        base = "_".join(parts[:-2] if len(parts) > 2 else parts[:1])
    elif m:
        base = base[: m.start()]
    words = [w for w in _words(base.replace("-", " ")) if w not in _NOISE and len(w) > 1]
    return " ".join(words[:MAX_CAPTION_WORDS])


def category_words(parts: Iterable[str]) -> list[str]:
    """Readable words of category folders (``signs_and_symbols`` -> ``signs and symbols``)."""
    return [" ".join(_words(p.replace("_", " ").replace("-", " "))) for p in parts]


def clipart_caption(rel: Path) -> tuple[str, str]:
    """Caption and top-level category of one clip-art file.

    Args:
        rel: path relative to the clip-art root, e.g. ``food/fruit/watermelon_james_kilfige_01.png``.

    Returns:
        ``("watermelon, a clip art of fruit, food", "food")``-style caption and the raw top folder.
    """
    folders = list(rel.parts[:-1])
    cats = [c for c in category_words(folders) if c and c not in _NOISE]
    title = clean_title(rel.stem)
    # Most specific folder first, top-level last: the top-level word is in every caption of
    # its category, which is what zero-shot prompts ("a clip art of food") ask about.
    where = ", ".join(reversed(cats))
    caption = f"{title}, a clip art of {where}" if title else f"a clip art of {where}"
    return caption, folders[0]


def emoji_caption(cp: int) -> str | None:
    """``"an emoji of grinning face"`` for a code point, or None when it has no name."""
    name = unicodedata.name(chr(cp), "")
    return f"an emoji of {name.lower()}" if name else None


# ------------------------------------------------------------------------------------------ sources
def list_clipart(cfg: BuildConfig, report: BuildReport) -> list[Pair]:
    """Every usable clip-art file as a pair (not yet rendered), duplicates dropped by content."""
    pairs, seen = [], set()
    for path in sorted(cfg.clipart_root.rglob("*.png")):
        rel = path.relative_to(cfg.clipart_root)
        if SKIP_DIRS.intersection(rel.parts[:-1]) or len(rel.parts) < 2:
            report.skipped["duplicate folder or no category"] = report.skipped.get(
                "duplicate folder or no category", 0) + 1
            continue
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest in seen:
            report.skipped["identical file"] = report.skipped.get("identical file", 0) + 1
            continue
        seen.add(digest)
        caption, top = clipart_caption(rel)
        pairs.append(Pair("openclipart", str(rel), caption, top))
    return pairs


def list_emoji(cfg: BuildConfig) -> list[Pair]:
    """Single-code-point emoji that have both a Unicode name and a glyph in the font (its cmap)."""
    cmap = _font_cmap(cfg.emoji_font)
    pairs = []
    for lo, hi in EMOJI_RANGES:
        for cp in range(lo, hi + 1):
            cap = emoji_caption(cp)
            if cap and cp in cmap:
                pairs.append(Pair("noto-emoji", f"U+{cp:04X}", cap, "emoji"))
    return pairs


def _font_cmap(path: Path) -> set[int]:
    TTFont = require("fontTools.ttLib", "train").TTFont

    return set(TTFont(str(path), lazy=True).getBestCmap())


def unit_hash(text: str) -> float:
    """A stable number in [0, 1) from ``text`` (sha256): splits by image that reruns reproduce."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split_of(key: str, cfg: BuildConfig) -> str:
    """``train`` or ``heldout`` from a salted hash of the image key (stable across runs)."""
    return "heldout" if unit_hash(f"{cfg.seed}:{key}") < cfg.heldout_fraction else "train"


# ------------------------------------------------------------------------------------------ render
def _square_on_white(img: Image.Image, size: int) -> Image.Image:
    img = img.convert("RGBA")
    img.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.alpha_composite(img, ((size - img.width) // 2, (size - img.height) // 2))
    return canvas.convert("RGB")


def render_clipart(src: Path, size: int, max_pixels: int) -> Image.Image | None:
    """The clip art centred on white at ``size`` px, or None if it is too large to decode safely."""
    with Image.open(src) as im:  # lazy: reads the header only
        if im.width * im.height > max_pixels:
            return None
        im.draft("RGBA", (size, size))  # no-op for PNG, cheap for JPEG
        return _square_on_white(im, size)


def render_emoji(cp: int, font: ImageFont.FreeTypeFont, size: int) -> Image.Image | None:
    """The emoji in colour on white at ``size`` px, or None when it renders blank."""
    canvas = Image.new("RGBA", (136, 128), (255, 255, 255, 0))  # Noto's bitmap strikes are 136x128
    ImageDraw.Draw(canvas).text((0, 0), chr(cp), font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    return _square_on_white(canvas.crop(box), size)


# ------------------------------------------------------------------------------------------- build
def build_dataset(out: Path, cfg: BuildConfig = BuildConfig(),
                  progress: Callable[[int, int], None] | None = None) -> BuildReport:
    """Render every pair, split by image and write the CSVs and the data card (resumable).

    Existing images are kept (reruns only render what is missing); CSVs and cards are written
    atomically at the end.

    Args:
        out: output folder (created).
        cfg: the build's knobs (None: the defaults).
        progress: called as ``progress(done, total)`` after each image.

    Returns:
        Counts per split, source and category, and skip reasons.

    Raises:
        InputError: a Debian source package is missing, or the held-out fraction is below 0.10.
    """
    cfg = cfg or BuildConfig()
    if not 0.10 <= cfg.heldout_fraction < 0.5:
        raise InputError("heldout_fraction", f"is {cfg.heldout_fraction}", "a value in [0.10, 0.5)")
    check_sources(cfg)
    report = BuildReport()
    font = None
    pairs = list_clipart(cfg, report)
    if cfg.emoji_font is not None:
        font = ImageFont.truetype(str(cfg.emoji_font), 109)  # the font's only bitmap size
        pairs += list_emoji(cfg)
    if not pairs:
        raise InputError(f"clip-art folder {str(cfg.clipart_root)!r}", "holds no PNG in a category folder",
                         f"<root>/<category>/.../<name>.png (the Debian layout; {APT_LINE})")
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    kept: list[Pair] = []
    for i, pair in enumerate(pairs):
        name = _image_name(pair)
        dst = images / name
        if not dst.exists():
            img = _render(pair, cfg, font)
            if img is None:
                reason = "over max_pixels" if pair.source == "openclipart" else "blank render"
                report.skipped[reason] = report.skipped.get(reason, 0) + 1
                if progress:
                    progress(i + 1, len(pairs))
                continue
            tmp = dst.with_suffix(".tmp.png")
            img.save(tmp)
            os.replace(tmp, dst)
        pair.filepath = str(Path("images") / name)
        pair.split = split_of(f"{pair.source}:{pair.key}", cfg)
        kept.append(pair)
        if progress:
            progress(i + 1, len(pairs))
    _write_outputs(out, kept, cfg, report)
    return report


def _image_name(pair: Pair) -> str:
    """The stable file name of a pair's rendered image."""
    return hashlib.sha1(f"{pair.source}:{pair.key}".encode()).hexdigest()[:16] + ".png"


def _render(pair: Pair, cfg: BuildConfig, font: ImageFont.FreeTypeFont | None) -> Image.Image | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if pair.source == "openclipart":
                return render_clipart(cfg.clipart_root / pair.key, cfg.image_size, cfg.max_pixels)
            return render_emoji(int(pair.key.removeprefix("U+"), 16), font, cfg.image_size)
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        return None  # one unreadable file must not end the build; counted as skipped


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_outputs(out: Path, pairs: list[Pair], cfg: BuildConfig, report: BuildReport) -> None:
    for split in ("train", "heldout"):
        rows = [p for p in pairs if p.split == split]
        report.counts[split] = len(rows)
        tmp = out / f"{split}.csv.tmp"
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["filepath", "caption", "source", "category"])
            for p in rows:
                # Absolute paths: open_clip_train's CsvDataset opens them as written.
                w.writerow([str((out / p.filepath).resolve()), p.caption, p.source, p.category])
        os.replace(tmp, out / f"{split}.csv")
    card = data_card(pairs, cfg, report)
    _atomic_write(out / "data_card.json", json.dumps(card, indent=2, default=str) + "\n")
    _atomic_write(out / "data_card.md", data_card_markdown(card))


def data_card(pairs: list[Pair], cfg: BuildConfig, report: BuildReport) -> dict:
    """The data card as a dict: sources, licences, counts, skips and caption examples."""
    per_cat: dict[str, dict[str, int]] = {}
    for p in pairs:
        per_cat.setdefault(p.category, {"train": 0, "heldout": 0})[p.split] += 1
    examples = {}
    for p in pairs:
        examples.setdefault(p.category, [])
        if len(examples[p.category]) < 3:
            examples[p.category].append(p.caption)
    return {
        "sources": [
            {"package": "openclipart-png", "licence": "public domain (CC0-style dedication)",
             "path": str(cfg.clipart_root)},
        ] + ([{"package": "fonts-noto-color-emoji", "licence": "SIL Open Font License 1.1",
               "path": str(cfg.emoji_font)}] if cfg.emoji_font is not None else []),
        "config": {k: str(v) for k, v in asdict(cfg).items()},
        "pairs": len(pairs),
        "splits": {s: sum(p.split == s for p in pairs) for s in ("train", "heldout")},
        "sources_count": dict(Counter(p.source for p in pairs)),
        "skipped": report.skipped,
        "unique_captions": len({p.caption for p in pairs}),
        "per_category": dict(sorted(per_cat.items(), key=lambda kv: -sum(kv[1].values()))),
        "caption_examples": examples,
    }


def data_card_markdown(card: dict) -> str:
    """The data card as Markdown."""
    lines = ["# Reference CLIP data card", "", "| package | licence |", "|---|---|"]
    lines += [f"| {s['package']} | {s['licence']} |" for s in card["sources"]]
    pairs = (f"Pairs: {card['pairs']} (train {card['splits']['train']}, held-out "
             f"{card['splits']['heldout']}, split by image); unique captions: {card['unique_captions']}.")
    lines += ["", pairs,
              f"Skipped: {card['skipped'] or 'none'}.", "",
              "| category | train | held-out | caption examples |", "|---|---|---|---|"]
    for cat, n in card["per_category"].items():
        ex = "; ".join(f"`{c}`" for c in card["caption_examples"].get(cat, []))
        lines.append(f"| {cat} | {n['train']} | {n['heldout']} | {ex} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ held-out set
LICENCES = {"openclipart": ("openclipart-png", "public domain (CC0-style dedication)"),
            "noto-emoji": ("fonts-noto-color-emoji", "SIL Open Font License 1.1")}
HELDOUT_CARD_FIELDS = ("file", "source_package", "licence", "category", "caption", "sha256", "role", "key")


def heldout_pairs(cfg: BuildConfig = BuildConfig()) -> list[Pair]:
    """The held-out pairs of the split the shipped reference models were trained with (not rendered).

    The same listing and the same salted hash as :func:`build_dataset` (duplicates dropped first,
    then :func:`split_of`), so these images were never trained on.

    Raises:
        InputError: a Debian source package is missing.
    """
    check_sources(cfg)
    pairs = list_clipart(cfg, BuildReport()) + (list_emoji(cfg) if cfg.emoji_font is not None else [])
    return [p for p in pairs if split_of(f"{p.source}:{p.key}", cfg) == "heldout"]


def stratified_pick(pairs: list[Pair], n: int, seed: int) -> list[Pair]:
    """``n`` pairs drawn per category in proportion to its size (largest remainder), seeded.

    Args:
        pairs: the pool.
        n: how many to draw (all of them when ``n >= len(pairs)``).
        seed: seed of the draw within each category.

    Returns:
        The drawn pairs, in the pool's order.
    """
    import random

    if n >= len(pairs):
        return list(pairs)
    by_cat: dict[str, list[Pair]] = {}
    for p in pairs:
        by_cat.setdefault(p.category, []).append(p)
    quota = {c: n * len(v) / len(pairs) for c, v in by_cat.items()}
    take = {c: int(q) for c, q in quota.items()}
    for c in sorted(quota, key=lambda c: (take[c] - quota[c], c))[: n - sum(take.values())]:
        take[c] += 1
    chosen = set()
    for c in sorted(by_cat):
        rng = random.Random(f"{seed}:{c}")  # per category: one category's size does not shift another's draw
        chosen.update(id(p) for p in rng.sample(by_cat[c], take[c]))
    return [p for p in pairs if id(p) in chosen]


def write_heldout(out: Path, pairs: list[Pair], cfg: BuildConfig = BuildConfig(),
                  roles: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Render ``pairs`` into ``out/<role>/`` (or ``out/``) and write ``out/data_card.csv`` (resumable).

    Args:
        out: the folder (created).
        pairs: held-out pairs (:func:`heldout_pairs`).
        cfg: the build's knobs (image size, sources).
        roles: ``source:key -> role``; a pair with a role is written under ``out/<role>/``.

    Returns:
        The card's rows (``HELDOUT_CARD_FIELDS``), one per image written.
    """
    roles = roles or {}
    font = ImageFont.truetype(str(cfg.emoji_font), 109) if cfg.emoji_font is not None else None
    rows = []
    for pair in pairs:
        role = roles.get(f"{pair.source}:{pair.key}", "")
        name = _image_name(pair)
        dst = out / role / name if role else out / name
        if not dst.exists():
            img = _render(pair, cfg, font)
            if img is None:
                continue  # too large or blank: the build skipped it too
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_suffix(".tmp.png")
            img.save(tmp, optimize=True)
            os.replace(tmp, dst)
        package, licence = LICENCES[pair.source]
        rows.append({"file": str(dst.relative_to(out)), "source_package": package, "licence": licence,
                     "category": pair.category, "caption": pair.caption,
                     "sha256": sha256_file(dst), "role": role,
                     "key": f"{pair.source}:{pair.key}"})
    write_heldout_card(out / "data_card.csv", rows)
    return rows


def write_heldout_card(path: Path, rows: list[dict[str, str]]) -> None:
    """The held-out data card as CSV (``HELDOUT_CARD_FIELDS``), written atomically."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=HELDOUT_CARD_FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


SUBSET_SCORED, SUBSET_CALIBRATION = 200, 40


def subset_roles(pairs: list[Pair], seed: int = 0, scored: int = SUBSET_SCORED,
                 calibration: int = SUBSET_CALIBRATION) -> dict[str, str]:
    """The shipped subset: ``scored + calibration`` pairs stratified by category, split again by category.

    Returns:
        ``source:key -> "scored" | "calibration"`` for the pairs in the subset.
    """
    subset = stratified_pick(pairs, scored + calibration, seed)
    calib = {id(p) for p in stratified_pick(subset, calibration, seed + 1)}
    return {f"{p.source}:{p.key}": "calibration" if id(p) in calib else "scored" for p in subset}


SHIPPED_HELDOUT = Path(__file__).resolve().parents[2] / "foclip" / "data" / "heldout"


def materialise_heldout(out: Path, cfg: BuildConfig = BuildConfig()) -> dict[str, Any]:
    """Write the held-out split to ``out``: ``scored/`` and ``calibration/`` (the shipped subset) and ``other/``.

    With the Debian packages every held-out image is rendered (the subset's files are byte-identical
    to the shipped ones: same renderer, same split); without them the shipped subset is copied.
    ``out/data_card.csv`` lists each file's source package, licence, category, caption and sha256.

    Returns:
        ``{"source": "debian packages" | "shipped subset", "counts": {role: n}, "missing": reason or ""}``.
    """
    import shutil

    try:
        pairs = heldout_pairs(cfg)
    except InputError as exc:
        rows = list(csv.DictReader((SHIPPED_HELDOUT / "data_card.csv").open(encoding="utf-8")))
        for r in rows:
            dst = out / r["file"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHIPPED_HELDOUT / r["file"], dst)
        write_heldout_card(out / "data_card.csv", rows)
        return {"source": "shipped subset", "counts": dict(Counter(r["role"] for r in rows)), "missing": str(exc)}
    roles = subset_roles(pairs, cfg.seed)
    keys = [f"{p.source}:{p.key}" for p in pairs]
    rows = write_heldout(out, pairs, cfg, {k: roles.get(k, "other") for k in keys})
    return {"source": "debian packages", "counts": dict(Counter(r["role"] for r in rows)), "missing": ""}
