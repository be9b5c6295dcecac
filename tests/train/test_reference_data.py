"""Tests of foclip_train/reference/data.py on a synthetic clip-art tree (no Debian packages needed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from foclip.errors import InputError
from foclip_train.reference.data import (
    CLIPART_ROOT,
    EMOJI_FONT,
    BuildConfig,
    build_dataset,
    clean_title,
    clipart_caption,
    emoji_caption,
    split_of,
)


@pytest.mark.parametrize(("stem", "title"), [
    # Real openclipart-png names: <title>_<author>_<counter>, the stem cut at 24 characters.
    ("light_bulb_karl_bartel_01", "light bulb"),
    ("table_tennis_omar_abo-na_01", "table tennis"),
    ("saturn_dan_gerhards_01", "saturn"),
    ("arrow_shape_jeff_walden_", "arrow shape"),
    ("flowerandpot_daniel_ste_r", "flowerandpot"),
    ("cavallo_architetto_franc_01", "cavallo"),
    ("star_95pt06step", "star"),
    ("jigsaw_blue_05", "jigsaw blue"),
    ("bored_dog_01", "bored dog"),
    ("gnome-fs-trash-empty", "fs trash empty"),
    ("resistors_ganson", "resistors"),
    ("cone_alt3_bw", "cone"),
    ("germany", "germany"),
])
def test_clean_title_drops_authors_counters_and_suffixes(stem, title):
    assert clean_title(stem) == title


def test_caption_names_the_folders_top_level_last():
    caption, top = clipart_caption(Path("food/fruit/watermelon_james_kilfige_01.png"))
    assert caption == "watermelon, a clip art of fruit, food" and top == "food"
    caption, top = clipart_caption(Path("signs_and_symbols/sm_005.png"))
    assert caption == "sm, a clip art of signs and symbols" and top == "signs_and_symbols"


def test_emoji_caption_uses_the_unicode_name():
    assert emoji_caption(0x1F600) == "an emoji of grinning face"
    assert emoji_caption(0x1FAFF) is None  # unassigned: no name, no pair


def _png(path: Path, size: tuple[int, int], color: tuple[int, int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", size, color).save(path)


@pytest.fixture()
def tree(tmp_path) -> Path:
    root = tmp_path / "png"
    for i in range(40):
        cat = ("animals/birds", "food/fruit", "shapes")[i % 3]
        # distinct pixels so that no two files are identical
        _png(root / cat / f"thing{i:02d}_annabel_lastnam_{i:02d}.png", (30 + i, 20), (i * 6, 100, 200 - i, 255))
    _png(root / "food" / "copy_of_thing01.png", (31, 20), (6, 100, 199, 255))  # identical to thing01
    _png(root / "unsorted" / "duplicates" / "dup.png", (8, 8), (1, 2, 3, 255))
    _png(root / "shapes" / "huge_poster.png", (3000, 2000), (0, 0, 0, 0))  # 6 Mpx: over the bound below
    (root / "shapes" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def _cfg(root: Path, **kw) -> BuildConfig:
    return BuildConfig(clipart_root=root, emoji_font=None, max_pixels=1_000_000, **kw)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_build_writes_split_csvs_card_and_bounded_images(tree, tmp_path):
    out = tmp_path / "data"
    report = build_dataset(out, _cfg(tree))
    train, held = _rows(out / "train.csv"), _rows(out / "heldout.csv")
    assert len(train) + len(held) == 40  # 43 files: 1 identical copy, 1 over max_pixels, 1 broken
    assert report.skipped["identical file"] == 1 and report.skipped["over max_pixels"] == 2
    assert report.skipped["duplicate folder or no category"] == 1
    assert {r["filepath"] for r in train}.isdisjoint({r["filepath"] for r in held})
    assert len(held) >= 1
    for r in train + held:
        with Image.open(r["filepath"]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
        assert "annabel" not in r["caption"] and r["caption"].endswith(("animals", "food", "shapes"))
    card = json.loads((out / "data_card.json").read_text())
    assert card["splits"] == {"train": len(train), "heldout": len(held)}
    assert set(card["per_category"]) == {"animals", "food", "shapes"}
    assert [s["package"] for s in card["sources"]] == ["openclipart-png"]
    assert "| animals |" in (out / "data_card.md").read_text()


def test_split_is_by_image_stable_and_near_the_fraction():
    cfg = BuildConfig(heldout_fraction=0.12, seed=0)
    keys = [f"openclipart:cat/img{i}.png" for i in range(4000)]
    first = [split_of(k, cfg) for k in keys]
    assert first == [split_of(k, cfg) for k in keys]
    share = first.count("heldout") / len(keys)
    assert 0.10 <= share <= 0.14
    other = [split_of(k, BuildConfig(heldout_fraction=0.12, seed=1)) for k in keys]
    assert other != first  # the seed salts the split


def test_rerun_keeps_rendered_images(tree, tmp_path):
    out = tmp_path / "data"
    build_dataset(out, _cfg(tree))
    img = next((out / "images").glob("*.png"))
    stamp = img.stat().st_mtime_ns
    build_dataset(out, _cfg(tree))
    assert img.stat().st_mtime_ns == stamp


def test_heldout_fraction_below_ten_percent_is_refused(tree, tmp_path):
    with pytest.raises(InputError, match="heldout_fraction"):
        build_dataset(tmp_path / "d", _cfg(tree, heldout_fraction=0.05))


def test_missing_packages_name_the_apt_line(tmp_path):
    with pytest.raises(InputError, match="apt-get install openclipart-png fonts-noto-color-emoji") as exc:
        build_dataset(tmp_path / "d", BuildConfig(clipart_root=tmp_path / "nope"))
    assert "\n" not in str(exc.value)
    (tmp_path / "png").mkdir()
    with pytest.raises(InputError, match="emoji font .*apt-get install"):
        build_dataset(tmp_path / "d", BuildConfig(clipart_root=tmp_path / "png", emoji_font=tmp_path / "x.ttf"))


def test_empty_tree_is_an_error(tmp_path):
    (tmp_path / "png").mkdir()
    with pytest.raises(InputError, match="holds no PNG"):
        build_dataset(tmp_path / "d", _cfg(tmp_path / "png"))


@pytest.mark.slow
@pytest.mark.skipif(not (CLIPART_ROOT.is_dir() and EMOJI_FONT.is_file()),
                    reason="needs apt-get install openclipart-png fonts-noto-color-emoji")
def test_real_packages_build(tmp_path):
    out = tmp_path / "data"
    report = build_dataset(out, BuildConfig())
    card = json.loads((out / "data_card.json").read_text())
    assert card["sources_count"]["noto-emoji"] > 1000 and card["sources_count"]["openclipart"] > 6000
    assert report.counts["heldout"] / card["pairs"] >= 0.10
    assert report.skipped.get("over max_pixels", 0) >= 1  # the tree has images over 16 Mpx
