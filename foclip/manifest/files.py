"""Reading, hashing and verifying a bundle's files against its manifest (the schema is in :mod:`.schema`).

Standard library only, like the schema. :func:`read_manifest` parses and checks ``manifest.json``;
:func:`verify_files` re-hashes every file it lists; :func:`resolve_inside` refuses a listed path
that a symlink takes out of the bundle. Writing goes through :mod:`foclip.outputs` (one atomic
writer for the whole project), re-exported by :mod:`foclip.manifest`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from foclip.errors import BundleError
from foclip.manifest.schema import MANIFEST_NAME, SCHEMA_VERSION, Manifest, ManifestError


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


def read_manifest(bundle: str | os.PathLike[str]) -> Manifest:
    """Read and check ``bundle/manifest.json`` (no hash checks; see :func:`verify_files`).

    Raises:
        BundleError: when the folder or manifest is missing, unreadable, of another schema, or
            fails a field check (the message names the field).
    """
    path = Path(bundle) / MANIFEST_NAME
    if not Path(bundle).is_dir():
        raise BundleError(str(bundle), "is not a folder", "a bundle folder written by `foclip export`")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        # The manifest is the closed world's root: one that points elsewhere could vouch for anything.
        raise BundleError(str(path), "is not a regular file (a symlink or a folder)",
                          "the manifest.json file `foclip export` wrote, inside the bundle")
    if not path.is_file():
        raise BundleError(str(bundle), "has no manifest.json", "a bundle folder written by `foclip export`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(str(path), f"cannot be parsed ({exc.__class__.__name__}: {exc})",
                          f"a schema-{SCHEMA_VERSION} foclip manifest") from exc
    version = data.get("schema_version", 1) if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        if version > SCHEMA_VERSION:
            raise BundleError(str(path), f"has schema version {version}, newer than this foclip reads",
                              f"schema {SCHEMA_VERSION} (upgrade foclip)")
        raise BundleError(str(path), f"has schema version {version} (foclip 0.1: no self-check reference set, "
                          "untyped fields)", f"schema {SCHEMA_VERSION}: re-export the bundle with `foclip export`")
    try:
        return Manifest.from_dict(data)
    except ManifestError as exc:
        raise BundleError(str(path), f"is invalid: {exc}", f"a schema-{SCHEMA_VERSION} manifest as `foclip export` "
                          "writes it") from exc


def resolve_inside(bundle: str | os.PathLike[str], rel: str) -> Path:
    """The real path of a listed file, refusing one that a symlink takes out of the bundle.

    Raises:
        BundleError: the path resolves outside the bundle folder.
    """
    root = Path(bundle).resolve()
    p = (root / rel).resolve()
    if p != root and root not in p.parents:
        raise BundleError(f"bundle file {rel!r}", "resolves outside the bundle (a symlink)",
                          "files inside the bundle folder")
    return p


def verify_files(bundle: str | os.PathLike[str], manifest: Manifest) -> list[tuple[str, str]]:
    """Re-hash every listed file.

    Returns:
        List of ``(relative path, problem)`` for each missing, changed or escaping file; empty
        when all match.
    """
    problems = []
    for rel, digest in manifest.files.items():
        try:
            p = resolve_inside(bundle, rel)
        except BundleError:
            problems.append((rel, "resolves outside the bundle (symlink)"))
            continue
        if not p.is_file():
            problems.append((rel, "missing"))
        elif sha256_file(p) != digest:
            problems.append((rel, "sha256 mismatch (file changed)"))
    return problems
