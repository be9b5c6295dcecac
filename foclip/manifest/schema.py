"""The bundle contract's schema: what a manifest is, its version, and the checks of every field.

Standard library only: the runtime reads a bundle with nothing but :mod:`foclip.manifest`, numpy,
PIL and onnxruntime (reading, hashing and verifying files is :mod:`foclip.manifest.files`). A bundle is one folder holding ``manifest.json`` and the files it lists; the manifest
is a **closed world**: every file the runtime opens is named by a typed field below and listed in
``files`` with its sha256, every path is relative and stays inside the folder.

Every runnable graph has one key, ``<role>.<precision>``: ``image.fp32``, ``image.int8``,
``text.fp16``, ``detect.fp32`` … A TensorRT engine names the key of the ONNX graph it was built
from (:attr:`EngineSpec.graph`) and its own precision.

Image graphs: input ``pixels`` float32, NCHW, RGB in [0, 1], already resized and centre-cropped to
``preprocess.image_size``; mean/std normalisation is inside the graph; output ``embedding``
float32 (N, embed_dim), L2-normalised. Text graphs: input ``tokens`` int64 (N, context_length);
output ``embedding``. Detect graphs: ``pixels_u8`` uint8 NHWC + ``text_bank`` in, ``score_color``
and ``score_gray`` out.

Every value is type- and range-checked when read (:meth:`Manifest.from_dict`); a manifest that
fails a check is refused with a message naming the field. Schema 1 manifests (foclip 0.1) are
refused with the command that rewrites the bundle (re-export): they carry neither a reference set
for the self-check nor the typed fields the runtime now checks.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
ROLES = ("image", "text", "detect")
PRECISIONS = ("fp32", "fp16", "int8")
# What the runtime implements; a manifest asking for anything else is refused, not ignored.
KNOWN_RESIZE = ("shortest",)
KNOWN_INTERPOLATION = ("bicubic",)
KNOWN_CROP = ("center",)
KNOWN_GRAYSCALE = ("luma-rgb01-float",)
KNOWN_CLAMP = ("per-pair",)
KNOWN_REDUCE = ("mean",)
KNOWN_DROP = ("relative",)
KNOWN_TOKENIZER = ("open_clip-simple-bpe",)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Least cosine against the fp32 PyTorch reference that a TensorRT engine must reach, by the engine's
# own precision (not its source graph's): fp32 as the fp32 ONNX graph; fp16 as the fp16 ONNX graph;
# bf16 (7 explicit mantissa bits to fp16's 10) looser, see docs/export.md "Engine gates".
ENGINE_GATES = {"fp32": 0.99999, "fp16": 0.999, "bf16": 0.995, "int8": 0.99}


class ManifestError(ValueError):
    """A manifest value of the wrong type, range or form (wrapped into a BundleError on read)."""


# --------------------------------------------------------------------------- checked readers
def _get(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict):
        raise ManifestError(f"{where} is {type(d).__name__}, expected an object")
    if key not in d:
        raise ManifestError(f"{where}.{key} is missing")
    return d[key]


def _str(d: Any, key: str, where: str, default: str | None = None) -> str:
    v = d.get(key, default) if isinstance(d, dict) and default is not None else _get(d, key, where)
    if not isinstance(v, str):
        raise ManifestError(f"{where}.{key} is {v!r}, expected a string")
    return v


def _int(d: Any, key: str, where: str, lo: int, hi: int) -> int:
    v = _get(d, key, where)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ManifestError(f"{where}.{key} is {v!r}, expected an integer from {lo} to {hi}")
    return v


def _float(d: Any, key: str, where: str, lo: float, hi: float) -> float:
    v = _get(d, key, where)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise ManifestError(f"{where}.{key} is {v!r}, expected a number from {lo:g} to {hi:g}")
    return float(v)


def _bool(d: Any, key: str, where: str) -> bool:
    v = _get(d, key, where)
    if not isinstance(v, bool):
        raise ManifestError(f"{where}.{key} is {v!r}, expected true or false")
    return v


def _choice(d: Any, key: str, where: str, known: tuple[str, ...]) -> str:
    v = _str(d, key, where)
    if v not in known:
        raise ManifestError(f"{where}.{key} is {v!r}, which this foclip does not implement (knows: {', '.join(known)})")
    return v


def _obj(d: Any, key: str, where: str, optional: bool = False) -> dict[str, Any]:
    if optional and (not isinstance(d, dict) or d.get(key) is None):
        return {}
    v = _get(d, key, where)
    if not isinstance(v, dict):
        raise ManifestError(f"{where}.{key} is {type(v).__name__}, expected an object")
    return v


def _list(d: Any, key: str, where: str) -> list[Any]:
    v = _get(d, key, where)
    if not isinstance(v, list):
        raise ManifestError(f"{where}.{key} is {type(v).__name__}, expected a list")
    return v


def check_rel_path(rel: Any, where: str) -> str:
    """A bundle-relative POSIX path that cannot leave the bundle.

    Raises:
        ManifestError: absolute, ``..``, backslash, empty or non-string paths.
    """
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise ManifestError(f"{where} is {rel!r}, expected a relative path inside the bundle")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or rel.startswith("~") or p.as_posix() != rel or rel in (".", MANIFEST_NAME):
        raise ManifestError(f"{where} is {rel!r}, expected a relative path inside the bundle (not absolute, "
                            "no '..', no '~')")
    return rel


# --------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class PreprocessSpec:
    """Eval preprocessing equal in effect to open_clip's eval transform.

    Resize the shortest side to ``image_size`` (bicubic), centre crop to ``image_size`` squared,
    scale to [0, 1]; ``mean``/``std`` normalisation happens inside the image graph.
    """

    image_size: int = 224
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    crop: str = "center"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "preprocess") -> PreprocessSpec:
        def triple(key: str, lo: float) -> tuple[float, float, float]:
            v = _list(d, key, where)
            if len(v) != 3 or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not lo < x < 10 for x in v):
                raise ManifestError(f"{where}.{key} is {v!r}, expected three numbers")
            return tuple(float(x) for x in v)  # type: ignore[return-value]

        return cls(image_size=_int(d, "image_size", where, 8, 4096),
                   resize_mode=_choice(d, "resize_mode", where, KNOWN_RESIZE),
                   interpolation=_choice(d, "interpolation", where, KNOWN_INTERPOLATION),
                   crop=_choice(d, "crop", where, KNOWN_CROP),
                   mean=triple("mean", -10), std=triple("std", 0))


@dataclass(frozen=True)
class GrayscaleSpec:
    """How the gray copy is made: luma of the [0, 1] float RGB with ``weights``, on 3 channels."""

    definition: str = "luma-rgb01-float"
    weights: tuple[float, float, float] = (0.299, 0.587, 0.114)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "grayscale") -> GrayscaleSpec:
        from_json = _list(d, "weights", where)
        if len(from_json) != 3 or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in from_json):
            raise ManifestError(f"{where}.weights is {from_json!r}, expected three numbers")
        return cls(_choice(d, "definition", where, KNOWN_GRAYSCALE), tuple(float(x) for x in from_json))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ScoringSpec:
    """CLIPscore as in :mod:`foclip.scoring`: ``score_scale * max(cos, 0)`` per pair, mean over prompts."""

    score_scale: float = 100.0
    clamp: str = "per-pair"
    reduce: str = "mean"
    drop: str = "relative"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "scoring") -> ScoringSpec:
        return cls(_float(d, "score_scale", where, 1e-6, 1e6), _choice(d, "clamp", where, KNOWN_CLAMP),
                   _choice(d, "reduce", where, KNOWN_REDUCE), _choice(d, "drop", where, KNOWN_DROP))


@dataclass(frozen=True)
class TokenizerSpec:
    """The torch-free tokenizer: a ``tokenizers`` JSON file and foclip's small config beside it."""

    file: str = "tokenizer.json"
    config_file: str = "tokenizer_config.json"
    kind: str = "open_clip-simple-bpe"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "tokenizer") -> TokenizerSpec:
        return cls(check_rel_path(_str(d, "file", where), f"{where}.file"),
                   check_rel_path(_str(d, "config_file", where), f"{where}.config_file"),
                   _choice(d, "kind", where, KNOWN_TOKENIZER))


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "tensor") -> TensorSpec:
        shape = _list(d, "shape", where)
        if any(isinstance(x, bool) or not isinstance(x, (int, str)) for x in shape):
            raise ManifestError(f"{where}.shape is {shape!r}, expected integers and axis names")
        dtype = _choice(d, "dtype", where, ("float32", "float16", "int64", "int32", "uint8"))
        return cls(_str(d, "name", where), dtype, tuple(shape))


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the bundle.

    Attributes:
        key: ``<role>.<precision>``.
        role: ``image``, ``text`` or ``detect``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        file: bundle-relative ONNX file.
        inputs: graph inputs.
        outputs: graph outputs.
        gate_min_cosine: least cosine against the fp32 PyTorch reference this graph must reach,
            at export and in the self-check where it runs (detect graphs: cosine-equivalent of
            their score tolerance).
        disabled_optimizers: ONNX Runtime CPU optimiser passes to switch off for this graph.
        quantization: how an int8 graph was made (:meth:`foclip.exporter.convert.Int8Method.to_dict`).
        notes: free text for people.
    """

    key: str
    role: str
    precision: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    gate_min_cosine: float
    disabled_optimizers: tuple[str, ...] = ()
    quantization: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "graph") -> GraphSpec:
        role = _choice(d, "role", where, ROLES)
        precision = _choice(d, "precision", where, PRECISIONS)
        key = _str(d, "key", where)
        if key != f"{role}.{precision}":
            raise ManifestError(f"{where}.key is {key!r}, expected {role}.{precision}")
        disabled = _list(d, "disabled_optimizers", where)
        if any(not isinstance(x, str) for x in disabled):
            raise ManifestError(f"{where}.disabled_optimizers is {disabled!r}, expected a list of names")
        quant = _obj(d, "quantization", where, optional=True)
        return cls(key=key, role=role, precision=precision,
                   file=check_rel_path(_get(d, "file", where), f"{where}.file"),
                   inputs=tuple(TensorSpec.from_dict(x, f"{where}.inputs") for x in _list(d, "inputs", where)),
                   outputs=tuple(TensorSpec.from_dict(x, f"{where}.outputs") for x in _list(d, "outputs", where)),
                   gate_min_cosine=_float(d, "gate_min_cosine", where, 0.0, 1.0),
                   disabled_optimizers=tuple(disabled), quantization=dict(quant),
                   notes=_str(d, "notes", where, default=""))


@dataclass(frozen=True)
class TextBankSpec:
    """A fixed prompt set embedded at export time."""

    name: str
    prompts_file: str  # JSON list of strings
    embeddings_file: str  # .npy float32 (P, embed_dim), L2-normalised
    count: int
    prompts_sha256: str  # sha256 of the UTF-8 prompts joined by "\n" (same hash as foclip generate)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "text_bank") -> TextBankSpec:
        digest = _str(d, "prompts_sha256", where)
        if not _HEX64.match(digest):
            raise ManifestError(f"{where}.prompts_sha256 is {digest!r}, expected 64 hex digits")
        return cls(_str(d, "name", where), check_rel_path(_get(d, "prompts_file", where), f"{where}.prompts_file"),
                   check_rel_path(_get(d, "embeddings_file", where), f"{where}.embeddings_file"),
                   _int(d, "count", where, 1, 10_000_000), digest)


@dataclass(frozen=True)
class ReferenceSpec:
    """A few real photos and prompts with their fp32 PyTorch embeddings, for the self-check.

    Attributes:
        photos: where each photo came from (``skimage:astronaut``…).
        pixels_file: uint8 (N, S, S, 3), resized and cropped as the runtime does.
        image_embeddings_file: float32 (2N, D): the N colour rows, then their luma-gray copies.
        prompts: the prompts.
        tokens_file: int64 (M, context_length) of the prompts.
        text_embeddings_file: float32 (M, D).
    """

    photos: tuple[str, ...]
    pixels_file: str
    image_embeddings_file: str
    prompts: tuple[str, ...]
    tokens_file: str
    text_embeddings_file: str

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "reference") -> ReferenceSpec:
        def strings(key: str) -> tuple[str, ...]:
            v = _list(d, key, where)
            if not v or any(not isinstance(x, str) for x in v):
                raise ManifestError(f"{where}.{key} is {v!r}, expected a non-empty list of strings")
            return tuple(v)

        return cls(strings("photos"), check_rel_path(_get(d, "pixels_file", where), f"{where}.pixels_file"),
                   check_rel_path(_get(d, "image_embeddings_file", where), f"{where}.image_embeddings_file"),
                   strings("prompts"), check_rel_path(_get(d, "tokens_file", where), f"{where}.tokens_file"),
                   check_rel_path(_get(d, "text_embeddings_file", where), f"{where}.text_embeddings_file"))


@dataclass(frozen=True)
class EngineSpec:
    """A TensorRT engine built from one of the bundle's ONNX graphs.

    Attributes:
        graph: key of the source ONNX graph (``image.fp32``, ``detect.fp32``…).
        precision: the engine's own precision (``fp32``, ``fp16``, ``bf16``).
        file: bundle-relative engine file.
        onnx_sha256: sha256 of the source ONNX file.
        tensorrt_version: TensorRT that built it.
        compute_capability: GPU it was built for (``9.0``).
        profile: (min, opt, max) batch.
        key: cache key over the fields above.
        gate_min_cosine: the gate the engine passed when built and must pass at load
            (:data:`ENGINE_GATES` of its precision; manifests written before it was recorded get that).
    """

    graph: str
    precision: str
    file: str
    onnx_sha256: str
    tensorrt_version: str
    compute_capability: str
    profile: tuple[int, int, int]
    key: str
    gate_min_cosine: float = -1.0  # -1: the precision's gate (set in __post_init__)

    def __post_init__(self) -> None:
        if self.gate_min_cosine < 0:
            object.__setattr__(self, "gate_min_cosine", ENGINE_GATES.get(self.precision, ENGINE_GATES["fp32"]))

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "engine") -> EngineSpec:
        profile = _list(d, "profile", where)
        if len(profile) != 3 or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in profile):
            raise ManifestError(f"{where}.profile is {profile!r}, expected three positive batch sizes")
        gate = _float(d, "gate_min_cosine", where, 0.0, 1.0) if isinstance(d, dict) and "gate_min_cosine" in d else -1.0
        return cls(_str(d, "graph", where), _choice(d, "precision", where, ("fp32", "fp16", "bf16", "int8")),
                   check_rel_path(_get(d, "file", where), f"{where}.file"), _str(d, "onnx_sha256", where),
                   _str(d, "tensorrt_version", where), _str(d, "compute_capability", where),
                   tuple(profile), _str(d, "key", where), gate)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Manifest:
    """Everything a consumer needs to use a bundle without its producer.

    ``info`` holds figures for people (export time, seed, parity summary, omitted precisions);
    nothing in it changes what the runtime does.
    """

    model_name: str
    pretrained: str  # open_clip tag, checkpoint file name, "reference", or "random(seed=N)"
    random_init: bool
    embed_dim: int
    context_length: int
    preprocess: PreprocessSpec
    grayscale: GrayscaleSpec
    scoring: ScoringSpec
    tokenizer: TokenizerSpec
    graphs: dict[str, GraphSpec]
    text_banks: dict[str, TextBankSpec]
    reference: ReferenceSpec | None
    opset: int
    versions: dict[str, str]
    files: dict[str, str]  # relative path -> sha256
    created: str
    parity_file: str = "parity.json"
    engines: tuple[EngineSpec, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # -- views by role (precision -> graph)
    def by_role(self, role: str) -> dict[str, GraphSpec]:
        """Graphs of one role, keyed by precision."""
        return {g.precision: g for g in self.graphs.values() if g.role == role}

    @property
    def image_encoders(self) -> dict[str, GraphSpec]:
        return self.by_role("image")

    @property
    def text_encoders(self) -> dict[str, GraphSpec]:
        return self.by_role("text")

    @property
    def detect_graphs(self) -> dict[str, GraphSpec]:
        return self.by_role("detect")

    @property
    def tokenizer_file(self) -> str:
        return self.tokenizer.file

    def referenced_files(self) -> dict[str, str]:
        """Every file a typed field names, with the field's name (the closed world's members)."""
        out = {self.tokenizer.file: "tokenizer.file", self.tokenizer.config_file: "tokenizer.config_file",
               self.parity_file: "parity_file"}
        for k, g in self.graphs.items():
            out[g.file] = f"graphs.{k}.file"
        for k, b in self.text_banks.items():
            out[b.prompts_file] = f"text_banks.{k}.prompts_file"
            out[b.embeddings_file] = f"text_banks.{k}.embeddings_file"
        if self.reference is not None:
            r = self.reference
            for name in ("pixels_file", "image_embeddings_file", "tokens_file", "text_embeddings_file"):
                out[getattr(r, name)] = f"reference.{name}"
        for i, e in enumerate(self.engines):
            out[e.file] = f"engines[{i}].file"
        return out

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Parse and check a manifest dict.

        Raises:
            ManifestError: a field missing, of the wrong type or range, an unknown definition,
                a path outside the bundle, or a file named but not listed in ``files``.
        """
        if not isinstance(d, dict):
            raise ManifestError(f"the manifest is {type(d).__name__}, expected an object")
        schema = _get(d, "schema_version", "manifest")
        if schema != SCHEMA_VERSION:
            raise ManifestError(f"schema_version is {schema!r}, expected {SCHEMA_VERSION}")
        files = _obj(d, "files", "manifest")
        for rel, digest in files.items():
            check_rel_path(rel, f"files[{rel!r}]")
            if not isinstance(digest, str) or not _HEX64.match(digest):
                raise ManifestError(f"files[{rel!r}] is {digest!r}, expected a sha256 (64 hex digits)")
        graphs = {}
        for k, g in _obj(d, "graphs", "manifest").items():
            graphs[k] = GraphSpec.from_dict(g, f"graphs.{k}")
            if graphs[k].key != k:
                raise ManifestError(f"graphs.{k} has key {graphs[k].key!r}, expected {k!r}")
        banks = {k: TextBankSpec.from_dict(b, f"text_banks.{k}") for k, b in _obj(d, "text_banks", "manifest").items()}
        ref = d.get("reference")
        versions = _obj(d, "versions", "manifest")
        man = cls(
            model_name=_str(d, "model_name", "manifest"), pretrained=_str(d, "pretrained", "manifest"),
            random_init=_bool(d, "random_init", "manifest"),
            embed_dim=_int(d, "embed_dim", "manifest", 1, 65536),
            context_length=_int(d, "context_length", "manifest", 2, 65536),
            preprocess=PreprocessSpec.from_dict(_obj(d, "preprocess", "manifest")),
            grayscale=GrayscaleSpec.from_dict(_obj(d, "grayscale", "manifest")),
            scoring=ScoringSpec.from_dict(_obj(d, "scoring", "manifest")),
            tokenizer=TokenizerSpec.from_dict(_obj(d, "tokenizer", "manifest")),
            graphs=graphs, text_banks=banks,
            reference=None if ref is None else ReferenceSpec.from_dict(ref),
            opset=_int(d, "opset", "manifest", 7, 100),
            versions={str(k): str(v) for k, v in versions.items()}, files=dict(files),
            created=_str(d, "created", "manifest"),
            parity_file=check_rel_path(_get(d, "parity_file", "manifest"), "parity_file"),
            engines=tuple(EngineSpec.from_dict(e, f"engines[{i}]") for i, e in enumerate(_list(d, "engines", "manifest"))),
            info=dict(_obj(d, "info", "manifest", optional=True)), schema_version=SCHEMA_VERSION,
        )
        unlisted = [(rel, what) for rel, what in man.referenced_files().items() if rel not in man.files]
        if unlisted:
            rel, what = unlisted[0]
            raise ManifestError(f"{what} names {rel!r}, which files does not list with a sha256")
        return man

    def with_changes(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
