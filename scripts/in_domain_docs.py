"""Write the in-domain table that docs/science.md opens with from a `foclip reproduce` report.json.

    python scripts/in_domain_docs.py docs/results/in-domain/report.json docs/science.md

Replaces the block between the markers of :func:`foclip_train.sections.in_domain.docs_block` (or
inserts it after the page's first heading), so the docs never retype a number.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from foclip.outputs import atomic_write_bytes
from foclip_train.sections.in_domain import DOCS_BEGIN, DOCS_END, docs_block


def main(argv: list[str]) -> int:
    """Rewrite the block; returns the exit code."""
    report_path, page = Path(argv[0]), Path(argv[1])
    block = docs_block(json.loads(report_path.read_text(encoding="utf-8")))
    text = page.read_text(encoding="utf-8")
    if DOCS_BEGIN in text:
        start, end = text.index(DOCS_BEGIN), text.index(DOCS_END) + len(DOCS_END)
        text = text[:start] + block + text[end:]
    else:
        first, _, rest = text.partition("\n")
        text = f"{first}\n\n{block}\n{rest}"
    atomic_write_bytes(page, text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
