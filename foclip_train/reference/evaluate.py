"""Held-out measurements of a reference CLIP: zero-shot top-1 over categories and image->text recall.

Both run on the held-out split written by :mod:`foclip_train.reference.data` (images never seen in
training), through foclip's own loader, so they measure exactly what ``--pretrained reference``
loads.
"""

from __future__ import annotations

# Lazy imports: torch and open_clip are imported inside the evaluation that runs the model.
import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from foclip.errors import InputError

ZERO_SHOT_TEMPLATE = "a clip art of {}"


@dataclass(frozen=True)
class HeldoutMetrics:
    """What the model card reports (rates in %, 0-100).

    Attributes:
        zero_shot_top1: top-1 over the clip-art top-level categories, prompt ``a clip art of {c}``.
        zero_shot_chance: 100 / number of categories.
        zero_shot_majority: share of the most frequent category (a constant guess).
        zero_shot_balanced: mean over categories of the share of that category's images predicted
            as it (chance: the same 100 / number of categories). Top-1 on these unbalanced
            categories swings with the recall of the largest one; this does not.
        ensemble_top1: zero-shot top-1 with each category's text embedding taken as the mean of the
            embeddings of the training split's distinct captions that end in that category (every
            clip-art caption does: ``..., a clip art of stars, shapes``). Text only, no image is
            used; the model's own caption vocabulary stands in for hand-written prompt templates.
            On a validation split its top-1 had a standard deviation of 0.8 points over 8 runs (4
            seeds, 4 recipes) where the single prompt's had 3.8 (docs/reference.md).
        ensemble_balanced: balanced recall of the same classifier.
        n_ensemble_captions: training captions averaged into the category embeddings.
        n_categories: categories present in the held-out clip art.
        n_zero_shot: held-out clip-art images scored.
        i2t_r1: image->text recall@1 over all held-out captions (a hit when the retrieved caption
            text equals the image's own; identical captions are merged first).
        i2t_r5: recall@5, same rule.
        n_captions: distinct held-out captions (the retrieval gallery).
        n_images: held-out images retrieved from.
    """

    zero_shot_top1: float
    zero_shot_chance: float
    zero_shot_majority: float
    n_categories: int
    n_zero_shot: int
    i2t_r1: float
    i2t_r5: float
    n_captions: int
    n_images: int
    zero_shot_balanced: float | None = None
    ensemble_top1: float | None = None
    ensemble_balanced: float | None = None
    n_ensemble_captions: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def read_split(csv_path: Path) -> list[dict[str, str]]:
    """Rows of a split CSV (``filepath``, ``caption``, ``source``, ``category``).

    Raises:
        InputError: the file is missing.
    """
    if not csv_path.is_file():
        raise InputError(f"split {str(csv_path)!r}", "does not exist", "a CSV written by the data builder")
    with csv_path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def category_prompt(category: str) -> str:
    """``signs_and_symbols`` -> ``a clip art of signs and symbols``."""
    return ZERO_SHOT_TEMPLATE.format(category.replace("_", " "))


def caption_category(caption: str, categories: list[str]) -> str | None:
    """The category a clip-art caption names in its tail (``..., fruit, food`` -> ``food``), if any.

    The data builder ends every clip-art caption with its top-level folder, after ``, `` or
    ``a clip art of ``; the longest matching category wins.
    """
    for c in sorted(categories, key=len, reverse=True):
        words = c.replace("_", " ")
        if caption.endswith((f", {words}", f"a clip art of {words}")):
            return c
    return None


def _rates(pred: np.ndarray, truth: np.ndarray, n: int) -> tuple[float, float]:
    # (top-1, balanced recall), both in %; every category 0..n-1 occurs in truth (the categories
    # are read from the same rows).
    top1 = float(100 * (pred == truth).mean())
    return top1, float(100 * np.mean([(pred[truth == k] == k).mean() for k in range(n)]))


def _encode(loaded, rows: list[dict[str, str]], texts: list[str], batch: int = 256
            ) -> tuple[np.ndarray, np.ndarray]:
    import open_clip
    import torch

    model = loaded.model
    transform = open_clip.image_transform(loaded.preprocess.image_size, is_train=False,
                                          mean=loaded.preprocess.mean, std=loaded.preprocess.std)
    img_feats, txt_feats = [], []
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            x = torch.stack([transform(Image.open(r["filepath"]).convert("RGB")) for r in rows[i:i + batch]])
            img_feats.append(torch.nn.functional.normalize(model.encode_image(x), dim=-1))
        for i in range(0, len(texts), batch):
            t = loaded.tokenizer(texts[i:i + batch])
            txt_feats.append(torch.nn.functional.normalize(model.encode_text(t), dim=-1))
    return torch.cat(img_feats).numpy(), torch.cat(txt_feats).numpy()


def evaluate_heldout(loaded, heldout_csv: Path, train_csv: Path | None = None) -> HeldoutMetrics:
    """Zero-shot top-1 and image->text R@1/R@5 of a loaded CLIP on the held-out split.

    Args:
        loaded: a :class:`foclip.models.loader.LoadedClip`.
        heldout_csv: ``heldout.csv`` from the data builder.
        train_csv: the split the model was trained on, whose captions build the ensemble
            classifier; default: ``train.csv`` next to ``heldout_csv``. Without it the ensemble
            figures are None.

    Returns:
        The measured metrics (percent).

    Raises:
        InputError: the CSV is missing or holds no clip art.
    """
    rows = read_split(heldout_csv)
    clip_rows = [r for r in rows if r["source"] == "openclipart"]
    if not clip_rows:
        raise InputError(f"split {str(heldout_csv)!r}", "holds no clip-art rows", "a held-out split with clip art")
    cats = sorted({r["category"] for r in clip_rows})
    captions = sorted({r["caption"] for r in rows})
    train_csv = train_csv or heldout_csv.parent / "train.csv"
    pool: list[tuple[str, int]] = []  # (training caption, category index)
    if train_csv.is_file():
        for cap in sorted({r["caption"] for r in read_split(train_csv) if r["source"] == "openclipart"}):
            c = caption_category(cap, cats)
            if c is not None:
                pool.append((cap, cats.index(c)))
    prompts = [category_prompt(c) for c in cats]
    img, txt = _encode(loaded, rows, prompts + captions + [cap for cap, _ in pool])
    cat_emb, cap_emb = txt[: len(cats)], txt[len(cats): len(cats) + len(captions)]
    # Zero-shot over categories on the clip-art images only (emoji have no category folder).
    is_clip = np.array([r["source"] == "openclipart" for r in rows])
    truth = np.array([cats.index(r["category"]) for r in clip_rows])
    top1, balanced = _rates((img[is_clip] @ cat_emb.T).argmax(1), truth, len(cats))
    counts = np.bincount(truth, minlength=len(cats))
    ens_top1 = ens_balanced = None
    if pool:
        pool_emb, owner = txt[len(cats) + len(captions):], np.array([k for _, k in pool])
        # A category no training caption names keeps its single prompt.
        ens = np.stack([pool_emb[owner == k].mean(0) if (owner == k).any() else cat_emb[k] for k in range(len(cats))])
        ens /= np.linalg.norm(ens, axis=1, keepdims=True)
        ens_top1, ens_balanced = _rates((img[is_clip] @ ens.T).argmax(1), truth, len(cats))
    # Retrieval over the distinct captions of the whole held-out split.
    own = np.array([captions.index(r["caption"]) for r in rows])
    top5 = np.argsort(-(img @ cap_emb.T), axis=1)[:, :5]
    return HeldoutMetrics(
        zero_shot_top1=top1,
        zero_shot_chance=100.0 / len(cats),
        zero_shot_majority=float(100 * counts.max() / counts.sum()),
        n_categories=len(cats),
        n_zero_shot=len(clip_rows),
        i2t_r1=float(100 * (top5[:, 0] == own).mean()),
        i2t_r5=float(100 * (top5 == own[:, None]).any(1).mean()),
        n_captions=len(captions),
        n_images=len(rows),
        zero_shot_balanced=balanced,
        ensemble_top1=ens_top1,
        ensemble_balanced=ens_balanced,
        n_ensemble_captions=len(pool) if pool else None,
    )
