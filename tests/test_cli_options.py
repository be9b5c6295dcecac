"""Every option of every `foclip` command is passed by some test or by the README's Quick tour.

An option is covered when its flag (``--name`` or ``-n``) appears as a word in a string literal of
a test module under tests/ (an argv list, a command line in a string), or in the Quick tour that
tests/test_docs.py runs as written. Options that cannot run here (a GPU, a cluster) go in
:data:`ALLOW` with the reason; nothing else may stay untested: remove the option or test it.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from foclip.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
# "command option" -> why no test here passes it (each needs hardware or a service these machines lack).
ALLOW: dict[str, str] = {}
_WORD = re.compile(r"[\s\"'`,;()\[\]{}|]+")


def options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.Action]]:
    """``("foclip <command...>", action)`` for every optional argument of every (sub-)command.

    Args:
        parser: the parser to walk (sub-parsers are walked too).
        path: the command words above ``parser``.

    Yields:
        The command line prefix and the action, help and version left out.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, (*path, name))
        elif action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield " ".join(("foclip", *path)), action


def _words(text: str) -> set[str]:
    return {w.split("=", 1)[0] for w in _WORD.split(text) if w.startswith("-")}


def _quick_tour() -> str:
    """The README's Quick tour section (run as written by tests/test_docs.py); empty when absent."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Quick tour\n(.*?)(?=^## )", readme, re.DOTALL | re.MULTILINE)
    return m.group(1) if m else ""


def covered_flags(exclude: Path = Path(__file__)) -> set[str]:
    """Flags that appear as words in the string literals of tests/ (but ``exclude``) or in the Quick tour."""
    flags = _words(_quick_tour())
    for path in (ROOT / "tests").rglob("*.py"):
        if path.resolve() == exclude.resolve():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                flags |= _words(node.value)
    return flags


def uncovered(parser: argparse.ArgumentParser, flags: set[str], allow: dict[str, str]) -> list[str]:
    """``"foclip serve --metrics-port"`` for each option no flag in ``flags`` names and ``allow`` does not list."""
    out = []
    for command, action in options(parser):
        name = f"{command} {max(action.option_strings, key=len)}"
        if not flags.intersection(action.option_strings) and name.removeprefix("foclip ") not in allow:
            out.append(name)
    return out


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def test_every_cli_option_is_run_by_a_test_or_the_quick_tour(parser):
    missing = uncovered(parser, covered_flags(), ALLOW)
    assert not missing, (
        "these options are passed by no test and not by the README's Quick tour: "
        + "; ".join(missing)
        + ". Test each one (an argv in tests/), or remove it, or list it in tests/test_cli_options.py ALLOW "
        "with the reason no test can run it")


def test_the_allow_list_names_existing_options(parser):
    names = {f"{command} {flag}".removeprefix("foclip ") for command, action in options(parser)
             for flag in action.option_strings}
    assert sorted(set(ALLOW) - names) == []


def test_an_option_no_test_passes_is_reported():
    parser = argparse.ArgumentParser(prog="foclip")
    sub = parser.add_subparsers()
    cmd = sub.add_parser("detect")
    cmd.add_argument("--batch")
    cmd.add_argument("--never-tested-anywhere", "-N")
    flags = covered_flags() | {"--batch"}
    assert uncovered(parser, flags, {}) == ["foclip detect --never-tested-anywhere"]
    assert uncovered(parser, flags, {"detect --never-tested-anywhere": "needs a GPU"}) == []
    assert uncovered(parser, flags | {"-N"}, {}) == []  # the short form counts too


def test_the_walk_reaches_nested_commands(parser):
    seen = {(command, action.dest) for command, action in options(parser)}
    assert ("foclip bench generate", "compile") in seen and ("foclip serve", "metrics_port") in seen
    assert ("foclip data wild", "max_side") in seen
