"""Shared CLI helpers (console, option parsing)."""

from __future__ import annotations

from rich.console import Console

from foclip.outputs import ensure_writable

console = Console(stderr=False)
err_console = Console(stderr=True)


def random_weights_notice(pretrained: str) -> None:
    """Say plainly when a randomly initialised model is in use."""
    if pretrained.startswith("random"):
        err_console.print(
            "[bold yellow]note:[/] using a RANDOMLY INITIALISED CLIP (--pretrained random): scores are "
            "near 0 and say nothing about real CLIP behaviour; this run tests mechanics only.",
            highlight=False,
        )


__all__ = ["console", "ensure_writable", "err_console", "random_weights_notice"]
