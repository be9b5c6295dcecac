"""The Open Inference Protocol (KServe v2, the REST protocol of Triton, KServe and MLServer) on the service.

One model, ``foclip`` (version ``1``), on the same service and the same detection path as
``/v1/detect`` (:class:`foclip.serve.core.DetectService`: drain, API key, per-client bound,
body size and time, pixel budget, Serve's cross-request batching, deadline). Only the wire format
differs, and it lives here:

* input ``IMAGE``, BYTES, shape ``[N]``: one encoded image file per element; in the binary-tensor
  extension (``Inference-Header-Content-Length``, each element a 4-byte little-endian length and
  its bytes), or in plain JSON as base64 strings (JSON strings cannot carry raw bytes);
* outputs, shape ``[N]``: FP32 ``SCORE_COLOR``, ``SCORE_GRAY``, ``DROP`` (NaN where there is no
  value: JSON ``null``), BOOL ``TAMPERED`` (false on an error), BYTES ``ERROR`` (empty when the
  image was scored, else ``"<code>: <message>"``); with several colour-space probes also
  ``PROBE_DROP`` (the multi-probe statistic) and ``DROP_<PROBE>`` per probe;
* a per-image failure is an output (status 200); a malformed request gets ``{"error": "..."}`` with
  the status the same failure gets on ``/v1/detect`` (400, 401, 404, 405, 408, 413, 429, 503, 504);
  documented parameters have strict types (``"false"`` is not a boolean), and a JSON body is
  bounded before it is parsed (:mod:`foclip.serve.json_bounds`).

Routes (all under ``/v2``): ``GET /v2`` (server metadata), ``GET /v2/health/live``,
``GET /v2/health/ready``, ``GET /v2/models/foclip[/versions/1]`` (model metadata),
``GET /v2/models/foclip[/versions/1]/ready``, ``POST /v2/models/foclip[/versions/1]/infer``.
Health answers without the API key (load balancers); metadata and inference need it when one is
set (``X-API-Key`` or ``Authorization: Bearer``; tritonclient passes either in ``headers=``).

No Ray and no FastAPI at import; plain functions testable without a server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import reprlib
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from foclip import __version__
from foclip.scoring import drop
from foclip.serve.config import Limits
from foclip.serve.core import DetectService, HttpError, Item
from foclip.serve.json_bounds import JSON_STRING, JsonBoundError, check_json_shape

ROUTE = "/v2/infer"  # the metrics label of inference
MODEL_NAME = "foclip"
MODEL_VERSION = "1"
INPUT_NAME = "IMAGE"
HEADER_LENGTH = "inference-header-content-length"
BINARY_EXTENSION = "binary_tensor_data"
BASE_OUTPUTS: tuple[tuple[str, str], ...] = (
    ("SCORE_COLOR", "FP32"), ("SCORE_GRAY", "FP32"), ("DROP", "FP32"), ("TAMPERED", "BOOL"), ("ERROR", "BYTES"),
)
_LENGTH = struct.Struct("<I")
_SHORT = reprlib.Repr()  # keyword arguments to Repr() need Python 3.12
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxlevel = 80, 80, 8, 3
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")  # what base64.b64decode(validate=True) accepts
RAW_MIN_CHARS = 1024  # shorter strings are parsed as usual: the saving would be nothing
_DECIMAL = re.compile(r"[+-]?[0-9]+")  # ASCII digits only (the range check that follows refuses a sign)


def probe_output_name(probe: str) -> str:
    """The output holding one probe's drop: ``DROP_`` and the probe's name in capitals (``hue180`` -> ``DROP_HUE180``)."""
    return "DROP_" + re.sub(r"[^A-Za-z0-9]+", "_", probe).upper()


def output_specs(probes: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """(name, datatype) of every output, in order, for a detector with these colour-space probes."""
    specs = list(BASE_OUTPUTS)
    if tuple(probes) != ("gray",):  # the multi-probe detector (foclip.runtime.Detector.multi_probe)
        specs.append(("PROBE_DROP", "FP32"))
        specs.extend((probe_output_name(p), "FP32") for p in probes)
    return specs


def short(value: Any) -> str:
    """``repr(value)`` cut to a line (an echoed value may be megabytes long)."""
    return _SHORT.repr(value)


def v2_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> HttpError:
    """An HttpError whose v2 body is ``{"error": message}`` (code ``v2_<status>`` in the metrics)."""
    return HttpError(status, "bad_request" if status == 400 else f"v2_{status}", message, headers)


# --- request -----------------------------------------------------------------------------------


@dataclass
class InferRequest:
    """What an inference request asked for, beside its images.

    Attributes:
        id: the request's ``id`` (echoed in the response), or None.
        outputs: requested output name -> return it as binary data; all outputs when None.
        binary_default: the request's ``binary_data_output`` (outputs not listed explicitly).
    """

    id: str | None = None
    outputs: dict[str, bool] | None = None
    binary_default: bool = False


def check_encoding(headers: Mapping[str, str]) -> None:
    """Refuse a compressed body (its decompressed size would escape the body limit).

    Raises:
        HttpError: 400 for a Content-Encoding other than identity.
    """
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise v2_error(400, f"Content-Encoding {encoding!r} is not accepted; send the request uncompressed")


class Base64Text:
    """A JSON string of base64 left where it is in the request body: an image, decoded once, never copied to a str.

    Args:
        view: the string's characters (only the base64 alphabet; nothing to unescape).
    """

    __slots__ = ("view",)

    def __init__(self, view: memoryview) -> None:
        self.view = view

    def decode(self) -> bytes:
        """The bytes, as ``base64.b64decode(text, validate=True)`` gives them (the alphabet is already checked).

        Raises:
            binascii.Error: on bad padding.
        """
        return binascii.a2b_base64(self.view)


def load_json(head: memoryview) -> Any:
    """``json.loads`` of a request's JSON, with each long base64 string under ``inputs[i].data`` left in place.

    Parsing turns the body's text into a ``str`` and each string into another: a JSON request whose
    images travel in base64 would hold its images three times over before decoding. Here the
    strings of :data:`RAW_MIN_CHARS` or more characters that are plain base64 (nothing escaped, so
    the parser would give exactly those characters) are replaced, before parsing, by short
    placeholders; after it, those under ``inputs[i].data`` become :class:`Base64Text` views of the
    body, and any elsewhere the ``str`` the parser would have made. The result is the parser's, but
    for those views. Malformed JSON gets the parser's own message, from the original text.

    Args:
        head: the JSON bytes (already within :func:`foclip.serve.json_bounds.check_json_shape`).

    Returns:
        The parsed value.

    Raises:
        ValueError: the JSON is malformed (``json.JSONDecodeError``, or a ``UnicodeDecodeError``).
    """
    spans: list[memoryview] = []
    parts: list[bytes | memoryview] = []
    pos = 0
    tag = "\x00foclip-" + os.urandom(4).hex() + "-"  # a client's own strings cannot collide with it
    for m in JSON_STRING.finditer(head):
        start, end = m.span()
        if end - start - 2 >= RAW_MIN_CHARS and _BASE64.fullmatch(head, start + 1, end - 1):
            parts += [head[pos:start], json.dumps(f"{tag}{len(spans)}").encode()]
            spans.append(head[start + 1:end - 1])
            pos = end
    if not spans:
        return json.loads(_whole(head))
    parts.append(head[pos:])
    try:
        obj = json.loads(b"".join(parts))
    except ValueError:
        return json.loads(_whole(head))  # the message (and its positions) of the text the client sent

    def restore(node: Any, keep: bool) -> Any:
        if isinstance(node, str) and node.startswith(tag):
            view = spans[int(node[len(tag):])]
            return Base64Text(view) if keep else str(view, "ascii")
        if isinstance(node, list):
            return [restore(x, keep) for x in node]
        if isinstance(node, dict):
            return {restore(k, False): restore(v, keep) for k, v in node.items()}
        return node

    if not isinstance(obj, dict):
        return restore(obj, False)
    out = {}
    for key, value in obj.items():
        key = restore(key, False)
        if key == "inputs" and isinstance(value, list):
            out[key] = [{restore(k, False): restore(v, restore(k, False) == "data") for k, v in t.items()}
                        if isinstance(t, dict) else restore(t, False) for t in value]
        else:
            out[key] = restore(value, False)
    return out


def _whole(view: memoryview) -> bytes:
    # The bytes a view shows, without a copy when it shows the whole of a bytes object.
    whole = view.obj
    return whole if isinstance(whole, bytes) and len(whole) == view.nbytes else bytes(view)


def split_body(headers: Mapping[str, str], body: bytes, limits: Limits) -> tuple[dict[str, Any], memoryview]:
    """The JSON header of a request and the binary tensor data after it.

    Args:
        headers: request headers with lower-case keys.
        body: the whole body.
        limits: the service limits (``max_json_bytes``, ``max_json_depth``).

    Returns:
        (the parsed JSON object, a view of the bytes after it).

    Raises:
        HttpError: 400 when ``Inference-Header-Content-Length`` is not a decimal length within the
            body, or the JSON part is not a JSON object; 413 or 400 past the JSON bounds
            (:func:`foclip.serve.json_bounds.check_json_shape`).
    """
    declared = headers.get(HEADER_LENGTH)
    view = memoryview(body)  # slices of a view copy nothing (the binary part may be most of the body)
    if declared is None:
        head, rest = view, view[len(body):]
    else:
        if not _DECIMAL.fullmatch(declared):  # int() would also take "1_0_9", " 12" and other digits
            raise v2_error(400, f"Inference-Header-Content-Length {short(declared)} is not a number")
        n = int(declared)
        if not 0 <= n <= len(body):
            raise v2_error(400, f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes")
        head, rest = view[:n], view[n:]
    try:
        check_json_shape(head, limits.max_json_bytes, limits.max_json_depth)
    except JsonBoundError as exc:
        raise HttpError(exc.status, exc.code, exc.message) from None
    try:
        obj = load_json(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise v2_error(400, f"the inference request is not valid JSON ({exc})") from None
    except RecursionError:  # bounded by max_json_depth; kept so that no nesting can ever be a 500
        raise v2_error(400, "the inference request nests too deep") from None
    if not isinstance(obj, dict):
        raise v2_error(400, "the inference request must be a JSON object with an 'inputs' list")
    return obj, rest


def _parameters(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise v2_error(400, f"{where}: 'parameters' must be a JSON object")
    if any(k.startswith("shared_memory") for k in params):
        raise v2_error(400, f"{where}: shared memory is not supported; send the data in the request")
    return params


def _flag(params: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    # Strict: bool("false") and bool({"x": 1}) are True, so anything but a JSON boolean is refused.
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise v2_error(400, f"{where}: parameter {key!r} is {_kind(value)}; expected true or false")
    return value


def _kind(value: Any) -> str:
    # The JSON kind of a parsed value, for messages (the value itself may be megabytes).
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


MAX_ID_CHARS = 256


def _request_id(value: Any) -> str | None:
    # The protocol's id is a string; a number is taken as its decimal text (clients send either).
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise v2_error(400, f"request: 'id' is {_kind(value)}; expected a string")
    text = str(value)
    if len(text) > MAX_ID_CHARS:
        raise v2_error(400, f"request: 'id' has {len(text)} characters; the limit is {MAX_ID_CHARS}")
    return text


def _flat(data: Any) -> list[Any]:
    # The protocol allows row-major nested lists for a tensor's JSON data.
    if isinstance(data, list):
        return [x for d in data for x in _flat(d)]
    return [data]


def decode_bytes_tensor(raw: bytes | memoryview, count: int) -> list[bytes]:
    """The elements of a BYTES tensor in the binary-tensor format (4-byte little-endian length, then the bytes).

    Raises:
        HttpError: 400 when the data does not hold exactly ``count`` well-formed elements.
    """
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise v2_error(400, f"input {INPUT_NAME!r}: binary data ends inside an element's 4-byte length")
        (n,) = _LENGTH.unpack_from(raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise v2_error(400, f"input {INPUT_NAME!r}: element {len(out)} declares {n} bytes; only "
                           f"{len(raw) - pos} remain")
        out.append(bytes(raw[pos:pos + n]))
        pos += n
    if len(out) != count:
        raise v2_error(400, f"input {INPUT_NAME!r}: binary data holds {len(out)} elements; shape says {count}")
    return out


def _items_from_json(data: Any, count: int) -> list[Item]:
    values = _flat(data)
    if len(values) != count:
        raise v2_error(400, f"input {INPUT_NAME!r}: 'data' holds {len(values)} elements; shape says {count}")
    items = []
    for i, v in enumerate(values):
        item_id = f"{INPUT_NAME}[{i}]"
        if not isinstance(v, (str, Base64Text)):
            raise v2_error(400, f"input {INPUT_NAME!r}: element {i} is {type(v).__name__}; expected a base64 "
                           "string (BYTES in JSON), or send the images as binary data")
        try:
            items.append(Item(item_id, v.decode() if isinstance(v, Base64Text) else base64.b64decode(v, validate=True)))
        except (binascii.Error, ValueError):
            items.append(Item(item_id, b"", {"code": "bad_base64", "message": (
                f"{item_id!r} | is not valid base64. Expected the image file's bytes in standard base64 "
                "(or send binary data with Inference-Header-Content-Length)")}))
    return items


def parse_infer(headers: Mapping[str, str], body: bytes, limits: Limits,
                known_outputs: Mapping[str, str]) -> tuple[InferRequest, list[Item]]:
    """Read an inference request into its options and its images.

    Args:
        headers: request headers with lower-case keys.
        body: the whole body (already within the size limit).
        limits: the service limits (``max_images``).
        known_outputs: output name -> datatype, of this model.

    Returns:
        (the request's options, one item per element of ``IMAGE``, in order).

    Raises:
        HttpError: 400 for a malformed request (wrong input name, datatype or shape, data that
            does not match the shape, an unknown output, unsupported parameters); 413 for more than
            ``limits.max_images`` images.
    """
    obj, binary = split_body(headers, body, limits)
    params = _parameters(obj, "request")
    req = InferRequest(id=_request_id(obj.get("id")),
                       binary_default=_flag(params, "binary_data_output", False, "request"))
    inputs = obj.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise v2_error(400, f"the request must have exactly one input, {INPUT_NAME!r} (BYTES, shape [N])")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise v2_error(400, f"unknown input {short(tensor.get('name'))}; the model's one input is {INPUT_NAME!r}")
    if tensor.get("datatype") != "BYTES":
        raise v2_error(400, f"input {INPUT_NAME!r} has datatype {short(tensor.get('datatype'))}; expected 'BYTES' "
                       "(one encoded image file per element)")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or len(shape) != 1 or not isinstance(shape[0], int)
            or isinstance(shape[0], bool) or shape[0] < 0):
        raise v2_error(400, f"input {INPUT_NAME!r} has shape {short(shape)}; expected [N], N the number of images")
    count = shape[0]
    if count == 0:
        raise HttpError(400, "no_images", f"input {INPUT_NAME!r} has no elements")
    if count > limits.max_images:
        raise HttpError(413, "too_many_images", f"{count} images in one request; the limit is {limits.max_images}")
    size = _parameters(tensor, f"input {INPUT_NAME!r}").get("binary_data_size")
    if size is not None:
        if type(size) is not int or size != len(binary):  # bool is an int subclass, and not a size
            raise v2_error(400, f"input {INPUT_NAME!r}: binary_data_size is {short(size)} but {len(binary)} bytes "
                           "follow the JSON header")
        if "data" in tensor:
            raise v2_error(400, f"input {INPUT_NAME!r} has both 'data' and binary data")
        items = [Item(f"{INPUT_NAME}[{i}]", b) for i, b in enumerate(decode_bytes_tensor(binary, count))]
    else:
        if binary:
            raise v2_error(400, f"{len(binary)} bytes follow the JSON header but no input declares binary_data_size")
        if "data" not in tensor:
            raise v2_error(400, f"input {INPUT_NAME!r} has neither 'data' nor binary_data_size")
        items = _items_from_json(tensor["data"], count)
    requested = obj.get("outputs")
    if requested is not None:
        if not isinstance(requested, list):
            raise v2_error(400, "'outputs' must be a list of {\"name\": ...} objects")
        req.outputs = {}
        for out in requested:
            name = out.get("name") if isinstance(out, dict) else None
            if not isinstance(name, str) or name not in known_outputs:
                raise v2_error(400, f"unknown output {short(name)}; the model's outputs are {', '.join(known_outputs)}")
            out_params = _parameters(out, f"output {name!r}")
            if "classification" in out_params:
                raise v2_error(400, f"output {name!r}: the classification extension is not supported")
            req.outputs[name] = _flag(out_params, "binary_data", req.binary_default, f"output {name!r}")
    return req, items


# --- response ----------------------------------------------------------------------------------


def _column(results: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in results], dtype=np.float32)


def output_arrays(results: list[dict[str, Any]], probes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every output tensor for these per-item results (Detector result dicts, in request order)."""
    out: dict[str, np.ndarray] = {
        "SCORE_COLOR": _column(results, "score_color"),
        "SCORE_GRAY": _column(results, "score_gray"),
        "DROP": _column(results, "drop"),
        "TAMPERED": np.array([bool(r.get("tampered")) for r in results], dtype=bool),
        "ERROR": np.array([f"{r['error']['code']}: {r['error']['message']}".encode() if r.get("error") else b""
                           for r in results], dtype=object),
    }
    if tuple(probes) != ("gray",):
        out["PROBE_DROP"] = _column(results, "probe_drop")
        color = _column(results, "score_color").astype(np.float64)
        for p in probes:
            probe = np.array([np.nan if (r.get("probe_scores") or {}).get(p) is None else r["probe_scores"][p]
                              for r in results], dtype=np.float64)
            # The runtime's own drop (foclip.scoring.drop): the statistic the detector thresholds.
            out[probe_output_name(p)] = np.where(np.isnan(probe) | np.isnan(color), np.nan,
                                                 drop(np.nan_to_num(color), np.nan_to_num(probe))).astype(np.float32)
    return out


def _binary(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(b)) + b for b in arr)
    if datatype == "BOOL":
        return arr.astype(np.uint8).tobytes()
    return arr.astype("<f4").tobytes()


def _json_data(arr: np.ndarray, datatype: str) -> list[Any]:
    if datatype == "BYTES":
        return [b.decode("utf-8", "replace") for b in arr]
    if datatype == "BOOL":
        return [bool(x) for x in arr]
    return [None if np.isnan(x) else float(x) for x in arr]  # JSON has no NaN: null, which clients read as NaN


def shape_infer_response(req: InferRequest, results: list[dict[str, Any]], specs: list[tuple[str, str]],
                         probes: tuple[str, ...], meta: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an inference response.

    Args:
        req: the request's options (requested outputs, binary or JSON, id).
        results: per-item results, in request order.
        specs: (name, datatype) of the model's outputs.
        probes: the detector's colour-space probes.
        meta: fields stated with every detection (``score_scale``, model, precision, backend).

    Returns:
        (body, headers): JSON alone, or JSON then binary tensors with ``Inference-Header-Content-Length``.
    """
    arrays = output_arrays(results, probes)
    wanted = req.outputs if req.outputs is not None else {name: req.binary_default for name, _ in specs}
    outputs, blobs = [], []
    for name, datatype in specs:
        if name not in wanted:
            continue
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [len(results)]}
        if wanted[name]:
            blob = _binary(arrays[name], datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _json_data(arrays[name], datatype)
        outputs.append(tensor)
    body: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": MODEL_VERSION, "outputs": outputs,
                            "parameters": {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}}
    if req.id is not None:
        body["id"] = req.id
    head = json.dumps(body, allow_nan=False).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(head))}


def json_bytes(obj: Any) -> bytes:
    """Compact JSON (no NaN)."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


def self_check_state(info: Mapping[str, Any]) -> str:
    """``passed``, ``skipped`` or ``failed``: the start-up self-check in a detector's ``info()``."""
    check = info.get("self_check") or {}
    if check.get("skipped"):
        return "skipped"
    return "passed" if check.get("passed") else "failed"


# --- routes ------------------------------------------------------------------------------------


Reply = tuple[int, bytes, dict[str, str]]
_JSON = {"content-type": "application/json"}
_MODEL_PATH = re.compile(r"^/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<tail>/ready|/infer)?$")


@dataclass
class V2Front:
    """The v2 routes of one service replica.

    Args:
        service: the replica's :class:`DetectService` (bounds, batching, metrics: shared with /v1).
        detector_info: the detector's ``info()`` (model, probes, thresholds, self-check).
        ready: whether this replica's detector is there (a replica exists only once its detector
            loaded; tests pass a switch). Readiness also needs the detector's self-check passed (or
            skipped with ``--no-self-check``) and the service not draining.
    """

    service: DetectService
    detector_info: Mapping[str, Any]
    ready: Callable[[], bool] = lambda: True
    server_version: str = field(default="")

    def __post_init__(self) -> None:
        if not self.server_version:
            self.server_version = __version__
        self.probes = tuple(self.detector_info.get("probes") or ("gray",))
        self.specs = output_specs(self.probes)

    async def dispatch(self, method: str, path: str, headers: Mapping[str, str], body: AsyncIterator[bytes],
                       client: str | None = None) -> Reply:
        """Answer one request under ``/v2``.

        Args:
            method: the HTTP method.
            path: the path after ``/v2`` ('' or starting with '/').
            headers: request headers with lower-case keys.
            body: the body's chunks (read only by inference).
            client: the client's address (per-client bound), or None.

        Returns:
            (status, body bytes, headers).
        """
        path = path.rstrip("/") if path != "/" else ""
        try:
            if path in ("/health/live", "/health/ready"):
                self._method(method, "GET")
                return self._health(path.endswith("ready"))
            if path == "":
                self._method(method, "GET")
                self.service.check_key(headers)
                return 200, json_bytes(self.server_metadata()), _JSON
            m = _MODEL_PATH.match(path)
            if m is None:
                raise v2_error(404, f"no route /v2{path}; see GET /v2/models/{MODEL_NAME} for this server's model")
            self._model(m["name"], m["version"])
            if m["tail"] == "/infer":
                self._method(method, "POST")
                return await self.infer(headers, body, client)
            self._method(method, "GET")
            if m["tail"] == "/ready":
                return self._health(True)
            self.service.check_key(headers)
            return 200, json_bytes(self.model_metadata()), _JSON
        except HttpError as exc:
            self.service.metrics.error(exc.code)
            return exc.status, json_bytes({"error": exc.message}), {**_JSON, **exc.headers}

    async def infer(self, headers: Mapping[str, str], stream: AsyncIterator[bytes], client: str | None) -> Reply:
        """``POST .../infer``: the service's bounds around this protocol's parsing and response.

        Per-item failures are outputs (``ERROR``, status 200); a whole-request failure is
        ``{"error": "<message>"}`` with its status.
        """
        try:
            async with self.service.admit(ROUTE, headers, client) as admission:
                check_encoding(headers)
                body = await self.service.read_body(headers, stream)
                # Off the event loop: a large body's scan, parse and base64 decoding must not hold up the
                # replica's other requests (the C parts keep the GIL, but each is one linear pass).
                req, items = await asyncio.to_thread(parse_infer, headers, body, self.service.limits, dict(self.specs))
                results = await self.service.detect(items)
                payload, extra = shape_infer_response(req, results, self.specs, self.probes, self.service.meta)
                admission.status = 200
                return 200, payload, extra
        except HttpError as exc:
            return exc.status, json_bytes({"error": exc.message}), {**_JSON, **exc.headers}

    def is_ready(self) -> bool:
        """Ready for inference: detector loaded, its self-check passed (or skipped), not draining."""
        return self.ready() and self_check_state(self.detector_info) != "failed" and not self.service.draining

    def _health(self, readiness: bool) -> Reply:
        if readiness and not self.is_ready():
            return 503, json_bytes({"error": "not ready"}), {**_JSON, "Retry-After": f"{self.service.retry_after_s:g}"}
        return 200, b"", {}

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            raise v2_error(405, f"method {method} is not allowed here; use {allowed}", {"Allow": allowed})

    @staticmethod
    def _model(name: str, version: str | None) -> None:
        if name != MODEL_NAME:
            raise v2_error(404, f"unknown model {short(name)}; this server serves {MODEL_NAME!r}")
        if version not in (None, MODEL_VERSION):
            raise v2_error(404, f"unknown version {short(version)} of model {MODEL_NAME!r}; it has version {MODEL_VERSION!r}")

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``: name, version and the protocol extensions served."""
        return {"name": "foclip", "version": self.server_version, "extensions": [BINARY_EXTENSION]}

    def model_metadata(self) -> dict[str, Any]:
        """``GET /v2/models/foclip``: what a generic client needs to build a request and read the answer.

        ``parameters`` (an addition to the protocol's fields, ignored by clients that do not read it)
        says what the numbers mean: the score scale, the thresholds, the CLIP model behind it.
        """
        info = self.detector_info
        params = {
            "description": ("FoCLIP grayscale-sensitivity detector. IMAGE: one encoded image file (JPEG, PNG, "
                            "WebP, GIF, BMP, TIFF) per element. SCORE_COLOR and SCORE_GRAY on 0..score_scale; "
                            "DROP a fraction; TAMPERED the decision; ERROR empty when the image was scored, "
                            "else '<code>: <message>' (scores NaN, TAMPERED false)."),
            "score_scale": info.get("score_scale"), "tau_score": info.get("tau_score"),
            "tau_drop": info.get("tau_drop"), "calibrated": info.get("calibrated"),
            "clip_model": info.get("model_name"), "precision": info.get("precision"),
            "backend": info.get("backend"), "bundle_hash": info.get("bundle_hash"),
            "probes": ",".join(self.probes),
            "self_check": self_check_state(info),
            "max_images": self.service.limits.max_images, "max_body_bytes": self.service.limits.max_body_bytes,
        }
        return {
            "name": MODEL_NAME, "versions": [MODEL_VERSION], "platform": "foclip",
            "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in self.specs],
            "parameters": {k: v for k, v in params.items() if v is not None},
        }


__all__ = ["V2Front", "output_specs", "parse_infer", "shape_infer_response"]
