"""Open question 2 of `foclip reproduce`: transfer across models (attacks under ``OUT/transfer/``).

Numbers: :func:`foclip_train.questions.transfer_compute`; no figure.
"""

from __future__ import annotations

from foclip_train import questions
from foclip_train.sections.base import Section

SECTION = Section("transfer", "Open question 2: transfer across models", questions.transfer_compute,
                  questions.transfer_markdown, reads=("transfer",))
