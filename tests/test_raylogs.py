"""Ray's two misleading start-up notes are dropped where foclip starts Ray; every other Ray record passes."""

from __future__ import annotations

import logging

from foclip.raylogs import NOTES, quiet_ray_start_notes


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_two_notes_are_dropped_and_the_rest_kept():
    keep = _Keep()
    loggers = [logging.getLogger(name) for name, _ in NOTES]
    saved = [(lg.level, lg.filters[:]) for lg in loggers]
    for lg in loggers:
        lg.addHandler(keep)
        lg.setLevel(logging.INFO)
    try:
        quiet_ray_start_notes()
        quiet_ray_start_notes()  # idempotent: one filter per note
        assert all(sum(type(f).__name__ == "_DropNote" for f in lg.filters) == 1 for lg in loggers)
        token, serve = loggers
        token.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        serve.info('Connecting to existing Serve app in namespace "serve". New http_options/controller_options '
                   "will not be applied.")
        serve.info("Application 'foclip' is ready at http://127.0.0.1:8000/.")
        token.warning("Token authentication is enabled but the authentication token is invalid or incorrect.")
        assert keep.messages == ["Application 'foclip' is ready at http://127.0.0.1:8000/.",
                                 "Token authentication is enabled but the authentication token is invalid or incorrect."]
    finally:
        for lg, (level, filters) in zip(loggers, saved, strict=True):
            lg.removeHandler(keep)
            lg.setLevel(level)
            lg.filters[:] = filters
