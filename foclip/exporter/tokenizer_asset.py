"""Write the bundle's tokenizer: open_clip's CLIP BPE vocabulary as a ``tokenizers`` JSON file.

The vocabulary and merges are read from open_clip's own ``bpe_simple_vocab_16e6.txt.gz`` and laid
out in the order open_clip builds them (256 byte symbols, the same with ``</w>``, the merges, then
``<start_of_text>`` and ``<end_of_text>``), so ids are identical. The pre-tokenizer is open_clip's
split pattern followed by byte-level mapping; cleaning and SOT/EOT/padding are done by
:mod:`foclip.runtime.tokenizer`.
"""

from __future__ import annotations

# Lazy imports: open_clip and tokenizers are imported only where the tokenizer asset is built or checked.
import gzip
from pathlib import Path
from typing import Any

from foclip.errors import ModelError
from foclip.manifest import atomic_write_bytes, atomic_write_json
from foclip.runtime.tokenizer import CONFIG_NAME, KIND

TOKENIZER_NAME = "tokenizer.json"
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
# open_clip's SimpleTokenizer pattern (it compiles it with IGNORECASE; "(?i)" does that in Oniguruma).
SPLIT_PATTERN = (
    r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)


def check_supported(tokenizer: Any) -> None:
    """Refuse open_clip tokenizers that the bundle tokenizer cannot reproduce.

    Args:
        tokenizer: the model's open_clip tokenizer.

    Raises:
        ModelError: for HF, SigLIP or reduction-mask tokenizers, or another cleaning mode.
    """
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower

    ok = (
        isinstance(tokenizer, SimpleTokenizer)
        and getattr(tokenizer, "clean_fn", None) is _clean_lower
        and getattr(tokenizer, "reduction_fn", None) is None
        and len(tokenizer.all_special_ids) == len(SPECIAL_TOKENS)
    )
    if not ok:
        raise ModelError(f"tokenizer {type(tokenizer).__name__}", "is not open_clip's plain CLIP BPE tokenizer",
                         "a model that uses open_clip's SimpleTokenizer (clean='lower', no reduction mask)")


def build_tokenizer(bpe_path: str | Path | None = None) -> Any:
    """Build a ``tokenizers.Tokenizer`` equal to open_clip's CLIP BPE (cleaning aside).

    Args:
        bpe_path: open_clip's merges file; open_clip's bundled one when None.

    Returns:
        The tokenizer.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    with gzip.open(bpe_path or default_bpe()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]  # the slice open_clip takes
    byte_syms = list(bytes_to_unicode().values())
    vocab_list = byte_syms + [s + "</w>" for s in byte_syms] + ["".join(m) for m in merges] + list(SPECIAL_TOKENS)
    vocab = {t: i for i, t in enumerate(vocab_list)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return tok


def tokenizer_config(tokenizer: Any, context_length: int) -> dict[str, Any]:
    """The ``tokenizer_config.json`` content for a bundle.

    Args:
        tokenizer: the model's open_clip tokenizer (checked with :func:`check_supported`).
        context_length: the text encoder's context length.

    Returns:
        JSON-ready dict.
    """
    return {
        "kind": KIND,
        "source": "open_clip SimpleTokenizer, bpe_simple_vocab_16e6",
        "clean": "ftfy.fix_text, html.unescape x2, whitespace collapse, lower()",
        "special_tokens": {t: int(tokenizer.encoder[t]) for t in SPECIAL_TOKENS},
        "sot_token_id": int(tokenizer.sot_token_id),
        "eot_token_id": int(tokenizer.eot_token_id),
        "pad_token_id": 0,
        "context_length": int(context_length),
        "truncation": "cut to context_length, last id set to eot_token_id",
    }


def write_tokenizer(out_dir: Path, tokenizer: Any, context_length: int) -> list[str]:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``out_dir``.

    Args:
        out_dir: the (temporary) bundle folder.
        tokenizer: the model's open_clip tokenizer.
        context_length: the text encoder's context length.

    Returns:
        The relative names written.

    Raises:
        ModelError: when the model's tokenizer is not supported.
    """

    check_supported(tokenizer)
    atomic_write_bytes(out_dir / TOKENIZER_NAME, build_tokenizer().to_str().encode("utf-8"))
    atomic_write_json(out_dir / CONFIG_NAME, tokenizer_config(tokenizer, context_length))
    return [TOKENIZER_NAME, CONFIG_NAME]
