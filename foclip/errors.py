"""User-facing errors.

A :class:`FoclipError` is something the user can fix (bad input, missing extra, wrong
option); the CLI prints its one-line message and exits 1. Anything else is a bug and keeps its
traceback. Messages follow the shape ``<subject> | <problem>. Expected <x>.``
"""

from __future__ import annotations

import difflib
import importlib


class FoclipError(Exception):
    """Base class of every error a user can act on."""

    def __init__(self, subject: str, problem: str, expected: str | None = None) -> None:
        self.subject = subject
        self.problem = problem
        self.expected = expected
        msg = f"{subject} | {problem}."
        if expected:
            msg += f" Expected {expected}."
        super().__init__(msg)


def did_you_mean(value: str, choices, cutoff: float = 0.6) -> str:
    """`` (did you mean 'fp16'?)`` for a mistyped ``value``, or ``""`` when nothing is close.

    Args:
        value: what was typed.
        choices: the valid values.
        cutoff: difflib similarity needed (0..1).

    Returns:
        The hint, with a leading space, to append to an error's problem.
    """

    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=2, cutoff=cutoff)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


class InputError(FoclipError):
    """An input file, image, prompt file or option value is unusable."""


class ModelError(FoclipError):
    """A model name or its weights cannot be resolved."""


class BundleError(FoclipError):
    """A bundle is missing, incomplete, tampered with or incompatible."""


class BackendError(FoclipError):
    """An inference backend or provider is unavailable."""


class InternalError(RuntimeError):
    """A bug: foclip's own, or a library caller breaking a documented contract (feeds of the wrong
    dtype, a runner used before ``activate()``). Deliberately not a :class:`FoclipError`, so the
    CLI shows its traceback instead of a one-line user message."""


class MissingExtraError(FoclipError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str | None) -> None:
        hint = f"`pip install 'foclip[{extra}]'`" if extra else "`pip install foclip` (a base dependency)"
        super().__init__(module, "is not installed", hint)


def require(module: str, extra: str | None):
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip extra.

    Args:
        module: dotted module name to import.
        extra: the foclip extra that provides it; None for a base dependency.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: when the import fails.
    """

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(module, extra) from exc
