"""`foclip` entry point: builds the sub-commands and turns FoclipErrors into one-line exits.

Exit codes (every command): 0 success; 1 a user error (one line on stderr, no traceback); 2 a
usage error (unknown command or option, with the sub-command's usage and close matches);
130 interrupted. ``foclip detect`` adds 3 (an image was flagged), 4 (an input could not be read)
and 5 (both); see ``foclip detect --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import importlib
import os
import re
import sys

from foclip.errors import FoclipError

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
    ("reproduce", "reproduce"),
    ("serve", "serve"),
    ("bench", "bench"),
    ("reference", "reference"),
    ("data", "data"),
)
EPILOG = ("exit codes: 0 success, 1 user error (one line, no traceback), 2 usage error; "
          "`foclip detect` also 3 flagged, 4 unreadable inputs, 5 both. "
          "--verbose (anywhere) shows the library logs that are otherwise hidden.")


class Parser(argparse.ArgumentParser):
    """ArgumentParser that adds "did you mean" to invalid-choice errors (commands and choice options)."""

    def error(self, message: str):  # type: ignore[override]
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2)) or [c.strip() for c in m.group(2).split(",")]
            close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.5)
            if close:
                message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
            else:
                message += self._other_flag(message, m.group(1))
        elif message.startswith("the following arguments are required"):
            message += self._typed_instead(message)
        super().error(message)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        # Kept for error(): a missing required flag may have been typed under a close name.
        self._typed = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def _typed_instead(self, message: str) -> str:
        """``; did you mean --out (for --output)?`` when a required flag is missing and a close unknown one was typed."""
        known = {s for a in self._actions for s in a.option_strings}
        typed = [w.split("=", 1)[0] for w in getattr(self, "_typed", []) if w.startswith("--")]
        hints = []
        for required in re.findall(r"(--[\w-]+)", message):
            close = difflib.get_close_matches(required, [w for w in typed if w not in known], n=1, cutoff=0.6)
            if close:
                hints.append(f"{required} (for {close[0]})")
        return f"; did you mean {', '.join(hints)}?" if hints else ""

    def _other_flag(self, message: str, value: str) -> str:
        """``; did you mean --out adv2/?`` when a value fits none of a flag's choices and a flag of a
        close name exists (``--output adv2/`` typed for ``--out adv2/``)."""
        flag = re.match(r"argument ([^:/ ]+)", message)
        if not flag:
            return ""
        names = [s for a in self._actions for s in a.option_strings
                 if s.startswith("--") and s != flag.group(1) and not a.choices]
        close = difflib.get_close_matches(flag.group(1), names, n=1, cutoff=0.6)
        return f"; did you mean {close[0]} {value}?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available sub-command."""
    parser = Parser(prog="foclip", description=__import__("foclip").__doc__.splitlines()[0], epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"foclip {__import__('foclip').__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs (hidden by default)")
    # A command that runs other commands (the demo) gets the entry points from here, so that no
    # command module imports this one back (main imports every command).
    parser.set_defaults(run_command=main, parse_command=parse)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for _name, mod in COMMANDS:
        try:
            module = importlib.import_module(f"foclip.cli.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name == f"foclip.cli.{mod}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    for p in sub.choices.values():
        # SUPPRESS: a sub-command's default must not undo `foclip --verbose CMD`.
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show library logs (hidden by default)")
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _unknown_options(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """``unrecognized arguments: --pretrianed; did you mean --pretrained?``"""
    options = [s for a in parser._actions for s in a.option_strings]
    hints = []
    for word in extras:
        if word.startswith("-"):
            close = difflib.get_close_matches(word.split("=", 1)[0], options, n=1, cutoff=0.6)
            if close:
                hints.append((word.split("=", 1)[0], close[0]))
    message = f"unrecognized arguments: {' '.join(extras)}"
    if len(hints) == 1:
        message += f"; did you mean {hints[0][1]}?"
    elif hints:
        message += "; did you mean " + ", ".join(f"{good} (for {bad})" for bad, good in hints) + "?"
    return message


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; an unknown option is reported with its sub-command's usage and close matches.

    Raises:
        SystemExit: code 2 on a usage error, 0 after ``--help``.
    """
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub = _subparser(parser, getattr(args, "command", None))
        sub.error(_unknown_options(sub, extras))
    return args


# What the user can do about an OS error on a file, by errno (permissions, missing, wrong kind, full disk).
_OS_ERRORS = {
    errno.EACCES: ("permission denied", "a file this user may read or write (check its mode and owner)"),
    errno.EPERM: ("operation not permitted", "a file this user may read or write (check its mode and owner)"),
    errno.ENOENT: ("does not exist", "an existing path"),
    errno.EISDIR: ("is a folder", "a file"),
    errno.ENOTDIR: ("a part of the path is not a folder", "a path through folders"),
    errno.ENOSPC: ("the disk is full", "free space on that file system"),
    errno.EDQUOT: ("the disk quota is exceeded", "free quota on that file system"),
    errno.EROFS: ("the file system is read-only", "a writable location"),
    errno.ENAMETOOLONG: ("the name is too long", "a shorter path"),
    errno.ELOOP: ("too many levels of symbolic links", "a path without a symlink loop"),
    errno.EIO: ("input/output error", "a readable disk"),
}


def os_error(exc: OSError) -> Exception | None:
    """The one-line user error for an OS error on a file (None when it is not one: a bug).

    Args:
        exc: the error a command raised.

    Returns:
        A FoclipError naming the file, the problem and what would work, or None for errors that
        name no file or have an errno no user can act on.
    """

    known = _OS_ERRORS.get(exc.errno or -1)
    if known is None or exc.filename is None:
        return None
    problem, expected = known
    return FoclipError(repr(str(exc.filename)), problem, expected)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    from foclip.cli.common import err_console, library_logs, run_scope

    args = parse(argv)
    with run_scope() as outermost:
        try:
            # Nested runs (the demo's steps) share the outer run's log capture and its --verbose.
            logs = library_logs(bool(getattr(args, "verbose", False))) if outermost else contextlib.nullcontext()
            with logs:
                try:
                    return int(args.func(args) or 0)
                except FoclipError as exc:
                    from rich.markup import escape

                    # escape(): messages contain brackets such as `pip install 'foclip[trt]'`.
                    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
                    return 1
                except OSError as exc:
                    user = os_error(exc)
                    if user is None:
                        raise  # not about a file the user named: a bug, keep its traceback
                    from rich.markup import escape

                    err_console.print(f"[bold red]error:[/] {escape(str(user))}", highlight=False, soft_wrap=True)
                    return 1
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # `foclip detect ... --format csv | head`: the reader left; stop quietly
            if outermost:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141


if __name__ == "__main__":
    sys.exit(main())
