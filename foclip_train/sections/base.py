"""What every `foclip reproduce` section shares: the :class:`Section` entry, the paper's figures, small helpers.

A section module imports this module (and libraries); it never imports another section module, the
registry (:mod:`foclip_train.sections`) or the runner (:mod:`foclip_train.reproduce`). The runner
hands each section the config and a context object (duck-typed: ``out``, ``inputs``, ``progress``,
``set_dir(name)``, ``resources(model, pretrained, set)``, ``generate(...)``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PAPER", "RecordsBySet", "Section", "mean", "num", "ok_records", "paper_improvement", "pct", "who"]

RecordsBySet = dict[str, list[dict[str, Any]]]

# The paper's headline figures (arXiv 2511.06947), as fractions or percent as labelled.
PAPER = {
    "improvement_pct_masterpieces": 42.7,  # the paper's "artistic" experiment: ten masterpiece prompts
    "improvement_pct_imagenet": 27.3,
    "drop_original": 0.085,
    "drop_manipulated": 0.632,
    "detection_accuracy": 0.91,
}


@dataclass(frozen=True)
class Section:
    """One part of the report, as the registry lists it.

    Attributes:
        name: file stem under ``sections/`` and key in report.json.
        title: heading in REPORT.md.
        run: ``(records by set, config, context) -> dict`` (JSON-ready numbers).
        table: ``(numbers, config) -> str`` (the section's body in REPORT.md).
        figures: ``(figures folder, numbers, report, config, context) -> [paths]`` or None; every figure
            is drawn and saved through :mod:`foclip.plots`.
        reads: extra attack folders under OUT (``adaptive``, ``transfer``...) whose records are part
            of the section's inputs (its cache key).
        default: run when ``--sections`` is not given.
        plain_sets: the section reads the plain attacks of the run's prompt sets (``OUT/sets``).
        key_extra: ``config -> JSON-able`` inputs outside OUT that are part of the cache key.
    """

    name: str
    title: str
    run: Callable[[RecordsBySet, Any, Any], dict[str, Any]]
    table: Callable[[dict[str, Any], Any], str]
    figures: Callable[[Path, dict[str, Any], dict[str, Any], Any, Any], list[Path]] | None = None
    reads: tuple[str, ...] = ()
    default: bool = True
    plain_sets: bool = True
    key_extra: Callable[[Any], Any] | None = None


def ok_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records without an ``error`` field."""
    return [r for r in records if not r.get("error")]


def mean(vals: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    v = [x for x in vals if x is not None]
    return statistics.fmean(v) if v else None


def paper_improvement(name: str) -> tuple[float | None, str]:
    """The paper's score improvement (percent) that a prompt set compares with, and why."""
    if name == "masterpieces":
        return PAPER["improvement_pct_masterpieces"], "paper's ten artistic-masterpiece prompts"
    if name.startswith("imagenet-"):
        return PAPER["improvement_pct_imagenet"], "paper's ImageNet subsets"
    if name == "artistic":
        return None, "foclip's own set; the paper's artistic figure is beside masterpieces"
    return None, "no paper counterpart"


def pct(v: float | None, digits: int = 1, sign: bool = False) -> str:
    """``v`` (already in percent) as text; ``–`` for None."""
    if v is None:
        return "–"
    return f"{v:+.{digits}f} %" if sign else f"{v:.{digits}f} %"


def num(v: float | None, digits: int = 3) -> str:
    """``v`` with ``digits`` decimals; ``–`` for None."""
    return "–" if v is None else f"{v:.{digits}f}"


def who(report: dict[str, Any]) -> str:
    """The model line every figure's title carries (and says so when the weights are random)."""
    tag = f"{report['model']} / {report['pretrained']}"
    return tag + (" (RANDOM weights: mechanics only)" if report["random_init"] else "")
