"""Readable output (issue 25): 80-column tables, "did you mean" for flag names and values, plots that
say what they show."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from foclip.cli.main import main


def test_inspect_verify_is_readable_at_80_columns(tiny_bundle, monkeypatch):
    from foclip.cli import common

    buf = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=buf, width=80, color_system=None))
    assert main(["inspect", str(tiny_bundle), "--verify"]) == 0
    text = buf.getvalue()
    # nothing cut (the rows once read `image_enc…`); the one "…" is the text bank's shortened sha256
    cut = [line for line in text.splitlines() if "…" in line]
    assert all(len(line.split("…")[0].split()[-1]) == 16 for line in cut), cut
    assert max(len(line) for line in text.splitlines()) <= 80
    for key in ("image.fp32", "image.fp16", "image.int8", "text.fp32", "detect.fp32"):
        assert text.count(f"│ {key} ") == 2, key  # in the parity table and in the self-check table
