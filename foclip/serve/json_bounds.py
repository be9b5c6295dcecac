"""What a JSON body may cost to parse, checked before it is parsed; stdlib only (the proxy runs it too).

A JSON string becomes one Python string of about its own size; every other value (``[]``, ``0``)
becomes a Python object of ~50 bytes for every 2-3 bytes sent, and nesting recurses in the parser.
So the bytes outside strings are bounded, and the nesting of what remains. Used by the v2 protocol
(:mod:`foclip.serve.v2`) in the replica and by the proxy's body gate (:mod:`foclip.serve.edge`),
which refuses such a body before it crosses to a replica.
"""

from __future__ import annotations

import re

JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # JSON's rule: a backslash escapes one character
_JSON_NESTING = re.compile(rb"[\[\]{}]")


class JsonBoundError(ValueError):
    """A JSON body past a bound: its HTTP status, a stable code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def check_json_shape(head: bytes | memoryview, max_bytes: int, max_depth: int) -> None:
    """Refuse JSON whose parse would cost more than its bytes, or recurse past ``max_depth``.

    The bytes outside strings are counted (a string's two quotes count), then the nesting of
    arrays and objects in them. The scan runs in C (a regular expression) except for one step per
    string, and stops at the first string past the bound; nothing is copied but the (bounded) text
    outside strings. Malformed JSON is left to the parser.

    Args:
        head: the JSON bytes.
        max_bytes: most bytes outside strings.
        max_depth: deepest nesting.

    Raises:
        JsonBoundError: 413 ``json_too_large`` past ``max_bytes``; 400 ``json_too_deep`` past ``max_depth``.
    """
    outside, pos, gaps = 0, 0, []
    for m in JSON_STRING.finditer(head):
        outside += m.start() - pos + 2
        if outside > max_bytes:
            break
        gaps.append(head[pos:m.start()])
        pos = m.end()
    else:
        outside += len(head) - pos
        gaps.append(head[pos:] if outside <= max_bytes else b"")
    if outside > max_bytes:
        raise JsonBoundError(413, "json_too_large", f"the inference request's JSON has more than {max_bytes} bytes "
                             "outside its strings; only the images' base64 strings may be large")
    depth = deepest = 0
    for m in _JSON_NESTING.finditer(b"".join(gaps)):
        depth += 1 if m[0] in b"[{" else -1
        deepest = max(deepest, depth)
    if deepest > max_depth:
        raise JsonBoundError(400, "json_too_deep", f"the inference request nests arrays and objects {deepest} deep; "
                             f"the limit is {max_depth}")


def json_head(body: bytes | bytearray, header_length: str | None) -> memoryview:
    """The JSON part of a v2 body: the first ``Inference-Header-Content-Length`` bytes, else all of it.

    A header that is not a length within the body gives the whole body (the replica refuses such a
    request with its own 400; bounding the whole of it first is never wrong).
    """
    view = memoryview(body)
    if header_length is not None and header_length.isascii() and header_length.isdigit():
        n = int(header_length)
        if n <= len(body):
            return view[:n]
    return view
