"""The one list of `foclip reproduce` sections, in report order (name -> run, table, figures).

A new section is a module with a ``SECTION`` (:class:`foclip_train.sections.base.Section`) added
to :data:`SECTIONS` here; the runner (:mod:`foclip_train.reproduce`) and the CLI know no section
by name. The CLI keeps a copy of the names for a fast ``--help`` (a test checks it matches).
"""

from __future__ import annotations

from foclip_train import wild
from foclip_train.sections import adaptive, in_domain, spectral, table1, table2, table3, transfer
from foclip_train.sections.base import Section

__all__ = ["DEFAULT_SECTIONS", "SECTIONS", "SECTION_NAMES", "TABLE_SECTIONS"]

SECTIONS: list[Section] = [table1.SECTION, table2.SECTION, table3.SECTION, adaptive.SECTION, transfer.SECTION,
                           spectral.SECTION, wild.SECTION, in_domain.SECTION]
SECTION_NAMES = tuple(s.name for s in SECTIONS)
DEFAULT_SECTIONS = tuple(s.name for s in SECTIONS if s.default)
# Sections that need every prompt set attacked (the others read the first one only, or none).
TABLE_SECTIONS = ("table1", "table2", "table3")
