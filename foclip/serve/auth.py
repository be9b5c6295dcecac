"""The API key as the service reads it, in constant time; stdlib only (the HTTP proxy imports it too).

The key itself never reaches a replica or the proxy: they hold its sha256 and compare digests.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

API_KEY_HEADER = "x-api-key"


def provided_api_key(headers: Mapping[str, str]) -> str | None:
    """The API key from ``X-API-Key`` or ``Authorization: Bearer <key>`` (lower-case header names), or None."""
    if API_KEY_HEADER in headers:
        return headers[API_KEY_HEADER]
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def key_matches(expected_sha256: str | None, provided: str | None) -> bool:
    """Whether a request may pass: no key is configured, or the provided key's sha256 matches, in constant time.

    Args:
        expected_sha256: hex sha256 of the configured key, or None for no key.
        provided: the key the request sent, or None.

    Returns:
        True when the request may pass.
    """
    if expected_sha256 is None:
        return True
    text = provided or ""
    # HTTP header values reach us decoded as latin-1: re-encoding them that way gives the bytes the
    # client sent, so a key sent as UTF-8 (the usual case) matches; a key sent as latin-1 matches too.
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:  # a str that never went through HTTP (tests, direct calls)
        raw = text.encode("utf-8")
    got = [hashlib.sha256(raw).hexdigest(), hashlib.sha256(text.encode("utf-8")).hexdigest()]
    # Compare digests (fixed length) so that neither the key's length nor its prefix leaks.
    matches = [hmac.compare_digest(g, expected_sha256) for g in got]  # both compared, always
    return provided is not None and any(matches)
