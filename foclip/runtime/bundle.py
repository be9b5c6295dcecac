"""Open a bundle written by ``foclip export`` and check that it is intact.

:func:`open_bundle` reads ``manifest.json`` and re-hashes every file it lists; a missing or
changed file is a :class:`~foclip.errors.BundleError` that names the file. Nothing is loaded into
an inference session here.

The **bundle hash** (:attr:`Bundle.bundle_hash`) identifies what a bundle computes. It is the
sha256 of the canonical JSON (sorted keys, no spaces) of: ``model_name``, ``pretrained``,
``preprocess``, ``grayscale``, ``scoring``, and ``files`` without TensorRT engines and timing
caches. ``foclip build-engine`` adds those later without changing what the ONNX graphs
compute, so a calibration stays valid when an engine is added; any change to a graph, a text
bank, the tokenizer or the preprocessing gives another hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foclip.errors import BundleError
from foclip.manifest import GraphSpec, Manifest, read_manifest, verify_files

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
        """Absolute path of a file of the bundle."""
        return self.path / rel

    def image_graph(self, precision: str) -> GraphSpec:
        """The image encoder at ``precision``.

        Raises:
            BundleError: when the bundle has no image encoder at that precision.
        """
        graphs = self.manifest.image_encoders
        if precision not in graphs:
            raise BundleError(f"bundle {str(self.path)!r}", f"has no {precision} image encoder",
                              f"one of the exported precisions: {', '.join(sorted(graphs)) or 'none'} "
                              "(re-export with `foclip export --precision ...`)")
        return graphs[precision]

    def text_bank(self, name: str) -> TextBank:
        """Load a bundled text bank.

        Raises:
            BundleError: unknown bank name, or a bank whose prompts do not match its recorded hash
                or whose embeddings have the wrong shape.
        """
        from foclip.manifest import sha256_text

        banks = self.manifest.text_banks
        if name not in banks:
            raise BundleError(f"text bank {name!r}", f"is not in bundle {str(self.path)!r}",
                              f"one of: {', '.join(banks) or 'none'}, or a list of prompts")
        spec = banks[name]
        prompts = tuple(json.loads(self.file(spec.prompts_file).read_text(encoding="utf-8")))
        emb = np.load(self.file(spec.embeddings_file), allow_pickle=False).astype(np.float32, copy=False)
        if sha256_text(list(prompts)) != spec.prompts_sha256:
            raise BundleError(f"text bank {name!r}", "prompts do not match their recorded sha256",
                              "a bundle written by `foclip export`")
        if emb.shape != (len(prompts), self.manifest.embed_dim):
            raise BundleError(f"text bank {name!r}", f"embeddings have shape {emb.shape}",
                              f"({len(prompts)}, {self.manifest.embed_dim})")
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
        """w of the CLIPscore (``manifest.scoring['score_scale']``; 100 when absent)."""
        scoring = self.manifest.scoring
        return float(scoring.get("score_scale", 100.0))


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
    core = {
        "model_name": d["model_name"], "pretrained": d["pretrained"], "preprocess": d["preprocess"],
        "grayscale": d["grayscale"], "scoring": d["scoring"],
        "files": {k: v for k, v in sorted(d["files"].items()) if not _is_engine_file(k, manifest)},
    }
    blob = json.dumps(core, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


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
            problem = "is missing" if why == "missing" else "has changed (sha256 differs from the manifest)"
            raise BundleError(f"bundle file {str(path / rel)!r}", f"{problem}{more}",
                              "the files exactly as `foclip export` wrote them (re-export the bundle)")
    for graph in manifest.image_encoders.values():
        if graph.file not in manifest.files:
            raise BundleError(f"bundle {str(path)!r}", f"lists {graph.file!r} without a sha256",
                              "every file listed in manifest.files")
    return Bundle(path=path, manifest=manifest, bundle_hash=bundle_hash(manifest))
