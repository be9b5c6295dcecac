"""Every command's `--help` says what it does in a sentence, sub-commands included (issue 36: `reference build`
had none)."""

from __future__ import annotations

import argparse

import pytest

from foclip.cli.main import build_parser


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(((*path, name), sub))
                found += _commands(sub, (*path, name))
    return found


@pytest.mark.parametrize(("path", "parser"), _commands(build_parser()), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_help_has_a_description(path, parser):
    assert parser.description and len(parser.description.split()) >= 8, f"`foclip {' '.join(path)} --help` has no description"


def test_reference_build_help_says_what_it_needs(capsys):
    parser = dict(_commands(build_parser()))[("reference", "build")]
    parser.print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert "openclipart-png" in text and "foclip[train]" in text and "resumes" in text
