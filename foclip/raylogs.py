"""Two of Ray's start-up notes that mislead a foclip user, dropped where foclip starts Ray.

``foclip serve`` and ``foclip generate --ray`` start a local Ray (or join a cluster). On a fresh
start Ray then says two things that read like problems and are not:

* "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out":
  Ray's default where a token exists (``~/.ray/auth_token``); nothing to do.
* "Connecting to existing Serve app ... New http_options/controller_options will not be applied":
  ``serve.run`` finding the Serve instance that foclip's own ``serve.start`` created a moment
  before, with the host, port and timeouts already applied.

:func:`quiet_ray_start_notes` drops exactly these records (by logger and text); every other Ray
message is left as it was. Stdlib only; nothing here imports Ray.
"""

from __future__ import annotations

import logging

# (logger name, start of the message) of each dropped note.
NOTES = (
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled for this Ray cluster"),
    ("ray.serve", "Connecting to existing Serve app"),
)


class _DropNote(logging.Filter):
    """Drops the records of one logger whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefix)


def quiet_ray_start_notes() -> None:
    """Drop :data:`NOTES` from Ray's loggers in this process (idempotent; call before ``ray.init``)."""
    for name, prefix in NOTES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNote) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropNote(prefix))


__all__ = ["NOTES", "quiet_ray_start_notes"]
