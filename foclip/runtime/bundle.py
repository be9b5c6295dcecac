"""Open a bundle written by ``foclip export`` and check that it is intact.

:func:`open_bundle` reads ``manifest.json`` (every field type- and range-checked, see
:mod:`foclip.manifest`), refuses definitions this runtime does not implement (grayscale weights,
score clamp…), and re-hashes every file it lists; a missing, changed or escaping file is a
:class:`~foclip.errors.BundleError` that names the file. The bundle is a closed world:
:meth:`Bundle.file` hands out only files the manifest lists. Nothing is loaded into an inference
session here.

The **bundle hash** (:attr:`Bundle.bundle_hash`) identifies what a bundle computes: the sha256 of
the canonical JSON (sorted keys, no spaces) of the whole manifest except its TensorRT engines
(``engines`` and their files and timing cache in ``files``). ``foclip build-engine`` adds those
later without changing what the ONNX graphs compute, so a calibration stays valid when an engine
is added; any change to a graph, a mapping, a text bank, the tokenizer or the preprocessing gives
another hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foclip.errors import BundleError
from foclip.manifest import GraphSpec, Manifest, read_manifest, sha256_text, verify_files
from foclip.scoring import LUMA

_ENGINE_SUFFIXES = (".engine", ".plan", ".cache", ".timing")


@dataclass(frozen=True)
class TextBank:
    """One prompt set with its L2-normalised embeddings.

    Attributes:
        name: bank name (``artistic``, ``imagenet-100``...) or ``custom`` for prompts given at load time.
        prompts: the prompts, in order.
        embeddings: float32 (P, D), L2-normalised.
        sha256: :func:`foclip.manifest.sha256_text` of the prompts.
    """

    name: str
    prompts: tuple[str, ...]
    embeddings: np.ndarray
    sha256: str


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder and its manifest."""

    path: Path
    manifest: Manifest
    bundle_hash: str

    def file(self, rel: str) -> Path:
        """Absolute path of a file the manifest lists (the closed world).

        Raises:
            BundleError: a file the manifest does not list with a sha256.
        """
        if rel not in self.manifest.files:
            raise BundleError(f"bundle file {rel!r}", "is not listed in the manifest with a sha256",
                              "only files `foclip export` listed")
        return self.path / rel

    def graph(self, key: str) -> GraphSpec:
        """The graph with key ``<role>.<precision>``.

        Raises:
            BundleError: no such graph (lists the bundle's keys).
        """
        if key not in self.manifest.graphs:
            raise BundleError(f"graph {key!r}", f"is not in bundle {str(self.path)!r}",
                              f"one of: {', '.join(self.manifest.graphs) or 'none'} "
                              "(re-export with `foclip export --precision ...`)")
        return self.manifest.graphs[key]

    def text_bank(self, name: str) -> TextBank:
        """Load a bundled text bank.

        Raises:
            BundleError: unknown bank name, or a bank whose prompts do not match its recorded hash
                or whose embeddings have the wrong shape.
        """

        banks = self.manifest.text_banks
        if name not in banks:
            raise BundleError(f"text bank {name!r}", f"is not in bundle {str(self.path)!r}",
                              f"one of: {', '.join(banks) or 'none'}, or a list of prompts")
        spec = banks[name]
        try:
            prompts = json.loads(self.file(spec.prompts_file).read_text(encoding="utf-8"))
            if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
                raise ValueError("not a JSON list of strings")
            prompts = tuple(prompts)
            emb = np.load(self.file(spec.embeddings_file), allow_pickle=False)
            if emb.dtype != np.float32:
                raise ValueError(f"embeddings are {emb.dtype}, not float32")
        except (OSError, ValueError) as exc:  # np.load refuses pickles with ValueError
            raise BundleError(f"text bank {name!r}", f"cannot be read ({exc})",
                              "a prompts JSON list and a float32 .npy as `foclip export` writes them") from exc
        if sha256_text(list(prompts)) != spec.prompts_sha256:
            raise BundleError(f"text bank {name!r}", "prompts do not match their recorded sha256",
                              "a bundle written by `foclip export`")
        if emb.shape != (len(prompts), self.manifest.embed_dim):
            raise BundleError(f"text bank {name!r}", f"embeddings have shape {emb.shape}",
                              f"({len(prompts)}, {self.manifest.embed_dim})")
        if not np.isfinite(emb).all():  # NaN scores would read as "clean" and write a bare NaN to JSONL
            raise BundleError(f"text bank {name!r}", f"embeddings hold {int((~np.isfinite(emb)).sum())} NaN or "
                              "infinite values", "finite embeddings as `foclip export` writes them")
        return TextBank(name, prompts, emb, spec.prompts_sha256)

    @property
    def default_bank(self) -> str:
        """The bank used when no prompts are given: the first bank the manifest lists.

        The exporter writes banks in the order of ``--prompts``, so this is the first prompt set
        named at export time.

        Raises:
            BundleError: when the bundle has no text bank.
        """
        if not self.manifest.text_banks:
            raise BundleError(f"bundle {str(self.path)!r}", "has no text bank",
                              "a bundle exported with --prompts, or prompts given to the Detector")
        return next(iter(self.manifest.text_banks))

    @property
    def score_scale(self) -> float:
        """w of the CLIPscore (``manifest.scoring.score_scale``)."""
        return self.manifest.scoring.score_scale


def _is_engine_file(rel: str, manifest: Manifest) -> bool:
    engine_files = {e.file for e in manifest.engines}
    return rel in engine_files or rel.endswith(_ENGINE_SUFFIXES) or rel.startswith("engines/")


def bundle_hash(manifest: Manifest) -> str:
    """The bundle hash defined in this module's docstring.

    Args:
        manifest: the bundle's manifest.

    Returns:
        Hex sha256.
    """
    d = manifest.to_dict()
    d.pop("engines")
    d["files"] = {k: v for k, v in d["files"].items() if not _is_engine_file(k, manifest)}
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def check_definitions(manifest: Manifest, path: str | os.PathLike[str]) -> None:
    """Refuse a manifest whose definitions differ from what this runtime computes.

    The manifest's parser already refuses unknown definition names; this checks the numbers that
    come with them (grayscale weights) and the image graph's input size.

    Raises:
        BundleError: naming the field, the value and what this runtime implements.
    """

    where = f"bundle {str(path)!r}"
    if tuple(manifest.grayscale.weights) != tuple(LUMA):
        raise BundleError(where, f"defines grayscale weights {list(manifest.grayscale.weights)}",
                          f"the luma weights this runtime computes, {list(LUMA)}")
    size = manifest.preprocess.image_size
    for g in manifest.graphs.values():
        if g.role == "image" and (len(g.inputs) != 1 or tuple(g.inputs[0].shape[1:]) != (3, size, size)):
            raise BundleError(where, f"graph {g.key} takes {[list(t.shape) for t in g.inputs]}",
                              f"one input of shape [batch, 3, {size}, {size}] (preprocess.image_size)")
        if g.role in ("image", "text") and (len(g.outputs) != 1 or g.outputs[0].shape[1:] != (manifest.embed_dim,)):
            raise BundleError(where, f"graph {g.key} gives {[list(t.shape) for t in g.outputs]}",
                              f"one output of shape [batch, {manifest.embed_dim}] (embed_dim)")


def open_bundle(path: str | os.PathLike[str], verify: bool = True) -> Bundle:
    """Read and verify a bundle.

    Args:
        path: the bundle folder.
        verify: re-hash every file listed in the manifest (default). Only skip when the same
            bundle was verified moments ago in this process.

    Returns:
        The bundle.

    Raises:
        BundleError: missing folder or manifest, unparsable manifest, or a listed file that is
            missing or whose sha256 differs (the message names the file).
    """
    path = Path(path)
    manifest = read_manifest(path)
    if verify:
        problems = verify_files(path, manifest)
        if problems:
            rel, why = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            problem = {"missing": "is missing", "sha256 mismatch (file changed)":
                       "has changed (sha256 differs from the manifest)"}.get(why, why)
            raise BundleError(f"bundle file {str(path / rel)!r}", f"{problem}{more}",
                              "the files exactly as `foclip export` wrote them (re-export the bundle)")
    check_definitions(manifest, path)
    return Bundle(path=path, manifest=manifest, bundle_hash=bundle_hash(manifest))
