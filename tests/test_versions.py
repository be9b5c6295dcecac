"""One version story: pyproject, ``foclip --version``, docs/changes.md and every "since 0.N" note agree.

The version is written once (``foclip.__version__``); pyproject reads it from there. A note in the
docs that names a foclip version ("since 0.2", "foclip 0.1", "0.2's default") may only name this one
or an older one, and docs/changes.md says what the current one changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

import foclip
from foclip.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
# "since 0.2", "foclip 0.1", "0.2's", "(0.1)": a version named in prose, not a figure.
VERSION_NOTE = re.compile(r"(?:\bsince|\bfoclip|\bversion)\s+(\d+)\.(\d+)\b(?![.\d%])|\b(\d+)\.(\d+)'s\b")


def current() -> tuple[int, int]:
    major, minor = foclip.__version__.split(".")[:2]
    return int(major), int(minor)


def test_pyproject_reads_the_one_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"], "the version is written in foclip/__init__.py only"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "foclip.__version__"}


def test_cli_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"foclip {foclip.__version__}"


def test_changes_page_names_the_current_version():
    text = (ROOT / "docs" / "changes.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(foclip.__version__)}\b", text, flags=re.MULTILINE), \
        f"docs/changes.md has no heading for {foclip.__version__}"


def test_no_doc_names_a_version_newer_than_this_one():
    newer = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in VERSION_NOTE.finditer(path.read_text(encoding="utf-8")):
            major, minor = (int(g) for g in (m.group(1, 2) if m.group(1) else m.group(3, 4)))
            if major == 0 and (major, minor) > current():
                newer.append(f"{path.name}: {m.group(0)!r}")
    assert not newer, f"notes name a foclip version newer than {foclip.__version__}: {newer}"
    # and the notes that exist are found (the pattern is not dead)
    export = (ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    assert VERSION_NOTE.search(export)
