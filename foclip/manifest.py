"""The bundle contract between ``foclip.exporter`` (writer) and ``foclip.runtime`` (reader).

Standard library only: the runtime reads a bundle with nothing but this module, numpy, PIL and
onnxruntime. A bundle is one folder holding ``manifest.json`` and the files it lists; every file
but the manifest itself is listed in ``files`` with its sha256.

Image encoder contract (all precisions): input ``pixels`` float32, NCHW, RGB in [0, 1], already
resized and centre-cropped to ``preprocess.image_size``; mean/std normalisation is inside the
graph; output ``embedding`` float32 (N, embed_dim), L2-normalised. Text encoder: input
``tokens`` int64 (N, context_length); output ``embedding`` float32 (N, embed_dim), L2-normalised.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class PreprocessSpec:
    """Eval preprocessing equal in effect to open_clip's eval transform.

    resize shortest side to ``image_size`` (``resize_mode='shortest'``), centre crop to
    ``image_size`` x ``image_size``, scale to [0, 1], normalise with ``mean``/``std``.
    """

    image_size: int = 224
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    crop: str = "center"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        return cls(
            image_size=int(d["image_size"]),
            resize_mode=d.get("resize_mode", "shortest"),
            interpolation=d.get("interpolation", "bicubic"),
            crop=d.get("crop", "center"),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
        )


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX file of an encoder at one precision, or the fused detection graph."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    notes: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GraphSpec:
        return cls(
            file=d["file"],
            inputs=tuple(TensorSpec.from_dict(x) for x in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(x) for x in d["outputs"]),
            notes=d.get("notes", ""),
        )


@dataclass(frozen=True)
class TextBankSpec:
    """A fixed prompt set embedded at export time."""

    name: str
    prompts_file: str  # JSON list of strings
    embeddings_file: str  # .npy float32 (P, embed_dim), L2-normalised
    count: int
    prompts_sha256: str  # sha256 of the UTF-8 prompts joined by "\n" (same hash as foclip generate)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextBankSpec:
        return cls(d["name"], d["prompts_file"], d["embeddings_file"], int(d["count"]), d["prompts_sha256"])


@dataclass(frozen=True)
class EngineSpec:
    """A TensorRT engine built from one of the bundle's ONNX files."""

    file: str
    encoder: str
    precision: str
    onnx_sha256: str
    tensorrt_version: str
    compute_capability: str
    profile: tuple[int, int, int]
    key: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineSpec:
        return cls(
            d["file"], d["encoder"], d["precision"], d["onnx_sha256"], d["tensorrt_version"],
            d["compute_capability"], tuple(d["profile"]), d["key"],
        )


@dataclass(frozen=True)
class Manifest:
    """Everything a consumer needs to use a bundle without its producer."""

    model_name: str
    pretrained: str  # open_clip tag, checkpoint file name, or "random(seed=N)"
    random_init: bool
    embed_dim: int
    context_length: int
    preprocess: PreprocessSpec
    image_encoders: dict[str, GraphSpec]  # precision -> graph
    text_encoders: dict[str, GraphSpec]
    text_banks: dict[str, TextBankSpec]
    tokenizer_file: str
    opset: int
    versions: dict[str, str]
    files: dict[str, str]  # relative path -> sha256
    created: str
    grayscale: dict[str, Any] = field(default_factory=dict)
    scoring: dict[str, Any] = field(default_factory=dict)
    detect_graphs: dict[str, GraphSpec] = field(default_factory=dict)  # precision -> fused graph
    engines: tuple[EngineSpec, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        def graphs(m: dict[str, Any] | None) -> dict[str, GraphSpec]:
            return {k: GraphSpec.from_dict(v) for k, v in (m or {}).items()}

        return cls(
            model_name=d["model_name"],
            pretrained=d["pretrained"],
            random_init=bool(d["random_init"]),
            embed_dim=int(d["embed_dim"]),
            context_length=int(d["context_length"]),
            preprocess=PreprocessSpec.from_dict(d["preprocess"]),
            image_encoders=graphs(d["image_encoders"]),
            text_encoders=graphs(d.get("text_encoders")),
            text_banks={k: TextBankSpec.from_dict(v) for k, v in d.get("text_banks", {}).items()},
            tokenizer_file=d["tokenizer_file"],
            opset=int(d["opset"]),
            versions=dict(d.get("versions", {})),
            files=dict(d["files"]),
            created=d["created"],
            grayscale=dict(d.get("grayscale", {})),
            scoring=dict(d.get("scoring", {})),
            detect_graphs=graphs(d.get("detect_graphs")),
            engines=tuple(EngineSpec.from_dict(e) for e in d.get("engines", [])),
            extra=dict(d.get("extra", {})),
            schema_version=int(d.get("schema_version", SCHEMA_VERSION)),
        )

    def with_changes(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(lines: list[str]) -> str:
    """Hex sha256 of prompts joined by newlines (UTF-8): the prompt-set hash used everywhere."""
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def read_manifest(bundle: str | os.PathLike[str]) -> Manifest:
    """Read ``bundle/manifest.json`` (no hash checks; see :func:`verify_files`).

    Raises:
        BundleError: when the folder or manifest is missing or unreadable.
    """
    from foclip.errors import BundleError

    path = Path(bundle) / MANIFEST_NAME
    if not Path(bundle).is_dir():
        raise BundleError(str(bundle), "is not a folder", "a bundle folder written by `foclip export`")
    if not path.is_file():
        raise BundleError(str(bundle), "has no manifest.json", "a bundle folder written by `foclip export`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if int(data.get("schema_version", SCHEMA_VERSION)) > SCHEMA_VERSION:
            raise BundleError(str(path), f"has schema version {data['schema_version']}, newer than this foclip reads",
                              f"schema {SCHEMA_VERSION} or older (upgrade foclip)")
        return Manifest.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(str(path), f"cannot be parsed ({exc.__class__.__name__}: {exc})",
                          f"a schema-{SCHEMA_VERSION} foclip manifest") from exc


def verify_files(bundle: str | os.PathLike[str], manifest: Manifest) -> list[tuple[str, str]]:
    """Re-hash every listed file.

    Returns:
        List of ``(relative path, problem)`` for each missing or changed file; empty when all match.
    """
    problems = []
    for rel, digest in manifest.files.items():
        p = Path(bundle) / rel
        if not p.is_file():
            problems.append((rel, "missing"))
        elif sha256_file(p) != digest:
            problems.append((rel, "sha256 mismatch (file changed)"))
    return problems
