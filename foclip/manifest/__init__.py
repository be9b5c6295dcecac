"""The bundle contract between ``foclip.exporter`` (writer) and ``foclip.runtime`` (reader).

Standard library only. Two parts, one import path for callers:

* :mod:`foclip.manifest.schema`: what a manifest is (typed dataclasses, schema version, the
  field checks of :meth:`Manifest.from_dict`);
* :mod:`foclip.manifest.files`: reading ``manifest.json``, hashing files and prompt sets, and
  verifying a bundle's files against the manifest.

The atomic writers of :mod:`foclip.outputs` are re-exported here for the exporter's convenience.
"""

from foclip.manifest.files import read_manifest, resolve_inside, sha256_file, sha256_text, verify_files
from foclip.manifest.schema import (
    ENGINE_GATES,
    KNOWN_CLAMP,
    KNOWN_CROP,
    KNOWN_DROP,
    KNOWN_GRAYSCALE,
    KNOWN_INTERPOLATION,
    KNOWN_REDUCE,
    KNOWN_RESIZE,
    KNOWN_TOKENIZER,
    MANIFEST_NAME,
    PRECISIONS,
    ROLES,
    SCHEMA_VERSION,
    EngineSpec,
    GraphSpec,
    GrayscaleSpec,
    Manifest,
    ManifestError,
    PreprocessSpec,
    ReferenceSpec,
    ScoringSpec,
    TensorSpec,
    TextBankSpec,
    TokenizerSpec,
    check_rel_path,
)
from foclip.outputs import atomic_write_bytes, atomic_write_json

__all__ = [
    "ENGINE_GATES", "KNOWN_CLAMP", "KNOWN_CROP", "KNOWN_DROP", "KNOWN_GRAYSCALE", "KNOWN_INTERPOLATION",
    "KNOWN_REDUCE", "KNOWN_RESIZE", "KNOWN_TOKENIZER", "MANIFEST_NAME", "PRECISIONS", "ROLES", "SCHEMA_VERSION",
    "EngineSpec", "GraphSpec", "GrayscaleSpec", "Manifest", "ManifestError", "PreprocessSpec", "ReferenceSpec",
    "ScoringSpec", "TensorSpec", "TextBankSpec", "TokenizerSpec", "atomic_write_bytes", "atomic_write_json",
    "check_rel_path", "read_manifest", "resolve_inside", "sha256_file", "sha256_text", "verify_files",
]
