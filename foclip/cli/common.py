"""Shared CLI helpers: consoles, the once-per-run notes, library-log capture, early input checks."""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import logging
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from foclip.outputs import ensure_writable  # noqa: F401 - commands import it from here

console = Console(stderr=False)
err_console = Console(stderr=True)

# Notes said once per run, however many sub-commands a run goes through (the demo runs four).
# Kept here, not in main.py: `python -m foclip.cli.main` loads main.py twice (as __main__ and when
# the demo imports it), and only one copy of this state may exist.
_said: set[str] = set()
_depth = [0]  # nesting of main() calls: the demo's steps run inside the demo's own run
# Loggers of libraries that attach their own stderr handler; detached while a command runs so that
# their records reach only the capture handler below.
_SELF_PRINTING_LOGGERS = ("huggingface_hub",)
_FILE_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")
# What the torch side (generate, export, reproduce, reference, bench generate) needs on top of a runtime-only
# install; the ONNX Runtime extra is named too because the exporter's parity checks run it.
TRAINING_EXTRA = "`pip install 'foclip[export,cpu]'` (`foclip[export,gpu]` next to onnxruntime-gpu)"


@contextlib.contextmanager
def run_scope() -> Iterator[bool]:
    """Mark one ``main()`` call; yields True for the outermost one (which starts a new run's notes)."""
    outermost = _depth[0] == 0
    if outermost:
        _said.clear()
    _depth[0] += 1
    try:
        yield outermost
    finally:
        _depth[0] -= 1


def say_once(key: str, text: str) -> None:
    """Print ``text`` (rich markup) on stderr unless a note with ``key`` was printed in this run."""
    if key not in _said:
        _said.add(key)
        err_console.print(text, highlight=False)


def random_weights_notice(pretrained: str) -> None:
    """Say plainly, once per run, when a randomly initialised model is in use."""
    if pretrained.startswith("random"):
        say_once("random-weights",
                 "[bold yellow]note:[/] using a RANDOMLY INITIALISED CLIP (--pretrained random): scores are "
                 "near 0 and say nothing about real CLIP behaviour; this run tests mechanics only.")


def require_torch_side(command: str) -> None:
    """Stop a command that needs torch and open_clip, on an install without them, with one line.

    The commands that reach :mod:`foclip_train` (and ``foclip export``) call this first, so a runtime-only install
    (``pip install 'foclip[cpu]'``) says which extra to add instead of failing inside a load.

    Args:
        command: the command as the user typed it (``foclip generate``).

    Raises:
        FoclipError: torch or open_clip is not installed.
    """
    from foclip.errors import FoclipError

    missing = [m for m in ("torch", "open_clip") if importlib.util.find_spec(m) is None]
    if missing:
        raise FoclipError(command, f"needs {' and '.join(missing)}, which this runtime-only install lacks",
                          TRAINING_EXTRA)


class _ListHandler(logging.Handler):
    """Keeps library log records in memory (the run's debug log)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def library_logs(verbose: bool) -> Iterator[_ListHandler | None]:
    """Route third-party log records and Python warnings away from the terminal while a command runs.

    Without ``verbose`` the records are kept in memory and, at the end, one dim line says how many
    were hidden; with ``verbose`` they are printed on stderr as they come (INFO and above, foclip's
    own DEBUG too). Logger levels, handlers and the warnings hook are restored afterwards, so that
    callers running several commands in one process (the demo, tests) see no lasting change.

    Args:
        verbose: print library logs instead of capturing them.

    Yields:
        The capture handler (None when verbose).
    """
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, root.handlers[:]
    detached = {name: logging.getLogger(name).handlers[:] for name in _SELF_PRINTING_LOGGERS}
    foclip_logger = logging.getLogger("foclip")
    saved_foclip_level = foclip_logger.level
    if verbose:
        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.setLevel(logging.INFO)
        foclip_logger.setLevel(logging.DEBUG)
        capture = None
    else:
        handler = capture = _ListHandler()
    # Our handler replaces any basicConfig-style handler, and its presence keeps libraries that call
    # logging.warning() at module level (ONNX Runtime's quantiser) from installing one.
    root.handlers = [handler]
    for name in detached:
        logging.getLogger(name).handlers = []
    logging.captureWarnings(True)
    try:
        yield capture
    finally:
        logging.captureWarnings(False)
        root.handlers = saved_handlers
        root.setLevel(saved_level)
        foclip_logger.setLevel(saved_foclip_level)
        for name, handlers in detached.items():
            logging.getLogger(name).handlers = handlers
        if capture is not None and capture.records:
            worst = max(r.levelno for r in capture.records)
            n = len(capture.records)
            err_console.print(f"[dim]{n} library log message{'s' * (n != 1)} hidden (worst: "
                              f"{logging.getLevelName(worst)}); --verbose shows them.[/]", highlight=False)


def echo_command(argv: Sequence[str]) -> None:
    """Print ``$ foclip ARGS`` wrapped between arguments (shell continuation), never inside one."""
    width = max(console.width, 40)
    words: list[str] = []
    for a in argv:  # an option stays on the line of its value
        if words and words[-1].startswith("--") and " " not in words[-1] and not a.startswith("-"):
            words[-1] += " " + shlex.quote(a)
        else:
            words.append(shlex.quote(a))
    lines, line = [], "$ foclip"
    for word in words:
        if len(line) + 1 + len(word) + 2 > width and line.strip() not in ("$ foclip", ""):
            lines.append(line + " \\")
            line = "    " + word
        else:
            line += " " + word
    lines.append(line)
    for text in lines:
        console.print(text, highlight=False, markup=False, soft_wrap=True)


def close_names(path: Path) -> list[str]:
    """Names in ``path``'s folder that look like its name (for "did you mean" hints)."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        names = [p.name for p in parent.iterdir()]
    except OSError:
        return []
    return [str(parent / n) if str(path.parent) not in ("", ".") else n
            for n in difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)]


def require_paths(paths: Sequence[str], what: str, expected: str) -> None:
    """Refuse, before any model loads, command-line paths that do not exist.

    Args:
        paths: the paths as typed.
        what: how to name one in the message (``input``, ``--originals``...).
        expected: the ``Expected ...`` part of the message.

    Raises:
        InputError: for the first path that does not exist, with close names in its folder.
    """
    from foclip.errors import InputError

    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            close = close_names(p)
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            raise InputError(f"{what} {raw!r}", f"does not exist{hint}", expected)


REFERENCE_PREFIX = "foclip-ref-"
PRETRAINED_HELP = ("weights: an open_clip pretrained tag (e.g. openai), a checkpoint file (.safetensors/.pt/.bin), "
                   "`reference` (foclip's shipped CLIPs, the default for --model foclip-ref-vit / foclip-ref-rn) "
                   "or `random` (seeded random init, mechanics only; used only when typed). Required for other "
                   "models")


def resolve_pretrained(model: str, pretrained: str | None) -> str:
    """The weights a run uses: ``--pretrained`` as typed, else ``reference`` for foclip's reference models.

    foclip never picks random weights on its own: for any other model ``--pretrained`` must be given
    (``random`` included), so a run can never end with random-init results nobody asked for.

    Args:
        model: the ``--model`` value.
        pretrained: the ``--pretrained`` value, None when not given.

    Returns:
        The weights source.

    Raises:
        ModelError: no ``--pretrained`` for a model that is not a reference model.
    """
    from foclip.errors import ModelError

    if pretrained:
        return pretrained
    if model.startswith(REFERENCE_PREFIX):
        return "reference"
    raise ModelError(f"--model {model}", "needs --pretrained (foclip never uses random weights unless asked)",
                     f"--pretrained TAG (an open_clip tag of {model}, e.g. openai for ViT-B-32), a checkpoint "
                     "file, `random` (mechanics only), or --model foclip-ref-vit (offline, `reference` weights)")


def check_weights_source(model: str, pretrained: str) -> None:
    """Check ``--pretrained`` before any model loads: a missing checkpoint file, or a tag with no network.

    A tag (anything that is not ``random``, ``reference`` or a file) needs the network unless its
    weights are cached. When the hub cannot be reached it is switched to offline mode (cached
    weights still load, no retries); with nothing cached the run stops here, in about a second.

    Args:
        model: the open_clip model name (for the message).
        pretrained: the ``--pretrained`` value.

    Raises:
        ModelError: the checkpoint file is missing, or the weights cannot be downloaded nor found cached.
    """
    from foclip.errors import ModelError
    from foclip.network import OFFLINE_CHOICES, go_offline_if_unreachable, weight_cache_is_empty

    if pretrained in ("random", "reference") or pretrained.startswith("random("):
        return
    path = Path(pretrained).expanduser()
    if path.suffix in _FILE_SUFFIXES or os.sep in pretrained or path.exists():
        if not path.is_file():
            close = close_names(path)
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            raise ModelError(f"checkpoint {pretrained!r}", f"does not exist{hint}", OFFLINE_CHOICES)
        return
    from foclip.errors import did_you_mean

    reason = go_offline_if_unreachable()
    if reason and weight_cache_is_empty():
        raise ModelError(f"pretrained {model}/{pretrained}",
                         f"cannot be downloaded: {reason}, and no weights are cached on this machine"
                         + did_you_mean(pretrained, ("random", "reference")),
                         OFFLINE_CHOICES)


def claims_output(command: str, *options: str, sidecars: Sequence[str] = (),
                  holds_work: Callable[[Path], bool] | None = None
                  ) -> Callable[[Callable[[Any], int]], Callable[[Any], int]]:
    """Run a command's ``run(args)`` as the one writer of its outputs, leaving nothing behind on failure.

    Wraps the call in a :class:`foclip.outputs.OutputClaim` on the path in each ``args.<option>``
    that is set (default ``out``): a second run on the same output is refused with one line naming
    the holder's PID, and when the run raises (a user error, Ctrl-C) what it created is removed.

    Args:
        command: the command as typed (``foclip detect``), named to a refused second run.
        options: the ``args`` attributes (and ``--options``) holding output paths (default ``out``).
        sidecars: suffixes of files written next to each output (``.meta.json``).
        holds_work: see :class:`~foclip.outputs.OutputClaim` (a resumable output that already holds work stays).

    Returns:
        The decorator.
    """
    def wrap(run: Callable[[Any], int]) -> Callable[[Any], int]:
        @functools.wraps(run)
        def claimed(args: Any) -> int:
            from foclip.outputs import OutputClaim

            with contextlib.ExitStack() as stack:
                for option in options or ("out",):
                    out = getattr(args, option, None)
                    if out:
                        subject = f"--{option.replace('_', '-')} {str(out)!r}"
                        stack.enter_context(OutputClaim(out, subject, command, [f"{out}{s}" for s in sidecars],
                                                        holds_work))
                return run(args)

        return claimed

    return wrap


STRICT_HELP = ("refuse to run when a folder or glob holds files that are not images (by default they are skipped "
               "and reported on stderr)")


def report_skipped(skipped: Any, strict: bool, what: str) -> None:
    """Say on stderr which files folder scans passed over, or refuse them all with ``--strict``.

    Args:
        skipped: the :class:`foclip.runtime.inputs.Skipped` the scans filled.
        strict: ``--strict`` was given.
        what: the inputs, as an error names them (``inputs 'photos/'``).

    Raises:
        InputError: ``strict`` and something was skipped.
    """
    if strict:
        skipped.refuse(what)
    if len(skipped):
        say_once(f"skipped:{what}", f"[yellow]note:[/] {escape(skipped.summary())} (--strict makes this an error)")
