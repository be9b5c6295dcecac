"""Open question 3 of `foclip reproduce`: where the manipulation lives (spatial frequency, luma vs chroma).

Numbers: :func:`foclip_train.questions.spectral_compute`; figures: ``spectrum*.png``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from foclip_train import questions
from foclip_train.sections.base import Section, who
from foclip_train.spectral import plot_spectrum


def spectral_figures(figs: Path, res: dict[str, Any], report: dict[str, Any], cfg: Any, ctx: Any) -> list[Path]:
    """spectrum.png (plain attack) and spectrum-<attack>.png per adaptive attack, via plot_spectrum."""
    w = who(report)
    if not res or "rows" not in res:
        return []
    written = []
    figs.mkdir(parents=True, exist_ok=True)
    for row in res["rows"]:
        tag = "" if row["attack"] == "plain" else "-" + re.sub(r"[^A-Za-z0-9._+-]", "_", row["attack"])
        path = figs / f"spectrum{tag}.png"
        fd, tmp = tempfile.mkstemp(suffix=".png", dir=figs)  # plot_spectrum saves by path: rename when done
        os.close(fd)
        try:
            plot_spectrum(row["spectrum"], tmp, f"perturbation energy, {row['attack']} attack, "
                          f"{res['prompt_set']} ({row['images']} images)\n{w}")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        written.append(path)
    return written


SECTION = Section("spectral", "Open question 3: where the manipulation lives (spatial frequency, luma vs chroma)",
                  questions.spectral_compute, questions.spectral_markdown, spectral_figures, reads=("adaptive",))
