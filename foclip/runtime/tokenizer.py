"""Torch-free CLIP tokenizer: the bundle's ``tokenizer.json`` run by the ``tokenizers`` library.

Gives exactly open_clip's ``SimpleTokenizer`` ids (``clean='lower'``, no reduction): the text is
cleaned as open_clip cleans it (``ftfy.fix_text``, HTML unescape twice, whitespace collapsed,
lower-cased) in Python, then split with open_clip's regular expression and byte-level BPE-encoded
by ``tokenizers`` (a Rust library, no torch). Sequences are ``[SOT] ids [EOT]`` zero-padded to the
context length; a longer one is cut to the context length with its last id replaced by EOT, as
open_clip does.

open_clip's split pattern matches ``<start_of_text>`` / ``<end_of_text>`` inside the text and maps
them to the special ids; the rare texts that hold them take a slower path that does the same.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import ftfy
import numpy as np

from foclip.errors import BundleError, InputError, require
from foclip.manifest import TokenizerSpec

CONFIG_NAME = "tokenizer_config.json"
KIND = "open_clip-simple-bpe"


def clean_lower(text: str, fix_text: Any) -> str:
    """open_clip's ``clean='lower'`` text cleaning.

    Args:
        text: raw prompt.
        fix_text: ``ftfy.fix_text``.

    Returns:
        The cleaned, lower-cased text.
    """
    text = fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    """Callable tokenizer: ``tok(texts) -> int64 (N, context_length)``."""

    def __init__(self, tokenizer: Any, config: dict[str, Any], context_length: int) -> None:
        self._tok = tokenizer
        self._fix_text = ftfy.fix_text
        self.context_length = int(context_length)
        self.sot_token_id = int(config["sot_token_id"])
        self.eot_token_id = int(config["eot_token_id"])
        self.special_tokens = {str(k): int(v) for k, v in config["special_tokens"].items()}

    def encode(self, texts: list[str]) -> list[list[int]]:
        """BPE ids of each text, without SOT/EOT and without truncation.

        Args:
            texts: prompts.

        Returns:
            One list of ids per text.
        """
        cleaned = [clean_lower(t, self._fix_text) for t in texts]
        out: list[list[int] | None] = [None] * len(cleaned)
        plain = [i for i, t in enumerate(cleaned) if not any(s in t for s in self.special_tokens)]
        for i, enc in zip(plain, self._tok.encode_batch([cleaned[i] for i in plain], add_special_tokens=False)):
            out[i] = list(enc.ids)
        for i, t in enumerate(cleaned):
            if out[i] is None:
                out[i] = self._encode_with_specials(t)
        return out  # type: ignore[return-value]

    def _encode_with_specials(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece, _ in self._tok.pre_tokenizer.pre_tokenize_str(text):
            if piece in self.special_tokens:
                ids.append(self.special_tokens[piece])
            else:
                ids.extend(t.id for t in self._tok.model.tokenize(piece))
        return ids

    def __call__(self, texts: list[str] | str) -> np.ndarray:
        """Token ids as open_clip's tokenizer returns them.

        Args:
            texts: one prompt or a list of prompts.

        Returns:
            int64 array (N, context_length).

        Raises:
            InputError: when an item is not a string.
        """
        if isinstance(texts, str):
            texts = [texts]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"prompt #{i}", f"is a {type(t).__name__}", "a str")
        ctx = self.context_length
        result = np.zeros((len(texts), ctx), dtype=np.int64)
        for row, ids in enumerate(self.encode(list(texts))):
            seq = [self.sot_token_id, *ids, self.eot_token_id]
            if len(seq) > ctx:
                seq = seq[:ctx]
                seq[-1] = self.eot_token_id
            result[row, : len(seq)] = seq
        return result


def load_tokenizer(bundle_dir: str | Path, spec: TokenizerSpec, context_length: int) -> ClipTokenizer:
    """Load the bundle's tokenizer without torch or open_clip.

    Args:
        bundle_dir: the bundle folder.
        spec: the manifest's tokenizer files.
        context_length: the model's token context (the manifest's ``context_length``).

    Returns:
        A :class:`ClipTokenizer`; call it with a list of prompts.

    Raises:
        BundleError: when the tokenizer files are missing, unreadable or of an unknown kind.
        MissingExtraError: when ``tokenizers`` or ``ftfy`` is not installed.
    """
    tokenizers = require("tokenizers", None)
    require("ftfy", None)
    bundle_dir = Path(bundle_dir)
    tok_path = bundle_dir / spec.file
    cfg_path = bundle_dir / spec.config_file
    for p in (tok_path, cfg_path):
        if not p.is_file():
            raise BundleError(str(p), "is missing", "the tokenizer files written by `foclip export`")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
        tok = tokenizers.Tokenizer.from_file(str(tok_path))
    except Exception as exc:  # tokenizers raises its own Exception subclass
        raise BundleError(str(tok_path), f"cannot be loaded ({exc.__class__.__name__}: {exc})",
                          "a tokenizers JSON file and tokenizer_config.json written by `foclip export`") from exc
    if config.get("kind") != KIND:
        raise BundleError(str(cfg_path), f"describes tokenizer kind {config.get('kind')!r}", f"{KIND!r}")
    return ClipTokenizer(tok, config, context_length)
