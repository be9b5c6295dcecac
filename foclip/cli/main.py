"""`foclip` entry point: builds the sub-commands and turns FoclipErrors into one-line exits."""

from __future__ import annotations

import argparse
import importlib
import sys

# (command, module under foclip.cli). Each module defines add_parser(subparsers) and run(args) -> int,
# and imports its heavy dependencies inside run() so that `foclip --help` stays fast.
COMMANDS = (
    ("demo", "demo"),
    ("generate", "generate"),
    ("export", "export"),
    ("inspect", "inspect"),
    ("build-engine", "build_engine"),
    ("detect", "detect"),
    ("calibrate", "calibrate"),
    ("serve", "serve"),
    ("bench", "bench"),
    ("reference", "reference"),
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(prog="foclip", description=__import__("foclip").__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"foclip {__import__('foclip').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for _name, mod in COMMANDS:
        try:
            module = importlib.import_module(f"foclip.cli.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name == f"foclip.cli.{mod}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    from foclip.errors import FoclipError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FoclipError as exc:
        from rich.console import Console
        from rich.markup import escape

        # escape(): messages contain brackets such as `pip install 'foclip[trt]'`.
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
