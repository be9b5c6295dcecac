"""The text bank a detector scores against: a bundled bank, or prompts embedded at load time.

Custom prompts are tokenised with the bundle's torch-free tokenizer and embedded with the bundle's
fp32 text graph, through the same loader/runner pair as every other graph
(:func:`foclip.runtime.backends.create_runner`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foclip.errors import BundleError, InputError, did_you_mean
from foclip.manifest import sha256_text
from foclip.prompts import load_prompt_set
from foclip.runtime.backends import canonical_backend, create_runner
from foclip.runtime.bundle import Bundle, TextBank
from foclip.runtime.capabilities import text_bank_backend
from foclip.runtime.tokenizer import load_tokenizer


def _read_prompt_file(path: Path) -> tuple[str, ...]:
    # Absolute, so that a file named like a built-in set (`artistic`, `imagenet-10`) is read as a
    # file and never resolved to the built-in set (whose imagenet-N draw would import open_clip).
    return load_prompt_set(str(path.resolve())).prompts


def resolve_text_bank(bundle: Bundle, prompts: str | Sequence[str] | TextBank | None,
                      backend: str = "ort-cpu", threads: int = 0) -> TextBank:
    """Pick or build the text bank a detector scores against.

    Args:
        bundle: the opened bundle.
        prompts: ``None`` (first bundled bank), a bank name, a prompt-file path, a list of
            prompts, or a ready :class:`TextBank`.
        backend: the detector's backend: custom prompts are embedded on ``ort-cuda`` when the
            detector runs there, with ONNX Runtime on the CPU otherwise (TensorRT included).
        threads: ORT intra-op threads for the text graph (0 = one per core).

    Returns:
        The text bank.

    Raises:
        BundleError: unknown bank name; bundle without a text encoder for custom prompts.
        InputError: empty prompt list or unreadable prompt file.
    """
    if isinstance(prompts, TextBank):
        return prompts
    if prompts is None:
        return bundle.text_bank(bundle.default_bank)
    if isinstance(prompts, str):
        if prompts in bundle.manifest.text_banks:
            return bundle.text_bank(prompts)
        if Path(prompts).expanduser().is_file():
            return embed_prompts(bundle, _read_prompt_file(Path(prompts).expanduser()), backend, threads,
                                 name=f"file:{Path(prompts).stem}")

        raise BundleError(f"prompts {prompts!r}", "is neither a bank of this bundle nor a prompt file"
                          + did_you_mean(prompts, bundle.manifest.text_banks),
                          f"a bank name ({', '.join(bundle.manifest.text_banks) or 'none'}), "
                          "a UTF-8 file with one prompt a line, or a list of prompts")
    prompts = [str(p) for p in prompts]
    for name in bundle.manifest.text_banks:  # a list equal to a bundled bank reuses its embeddings
        bank = bundle.text_bank(name)
        if list(bank.prompts) == prompts:
            return bank
    return embed_prompts(bundle, prompts, backend, threads)


def embed_prompts(bundle: Bundle, prompts: Sequence[str], backend: str = "ort-cpu", threads: int = 0,
                  name: str = "custom", chunk: int = 64) -> TextBank:
    """Embed prompts with the bundle's text encoder and torch-free tokenizer.

    Args:
        bundle: the opened bundle.
        prompts: the prompts.
        backend: the detector's backend (``ort-cuda`` embeds there; anything else on ORT CPU).
        threads: ORT intra-op threads (0 = one per core).
        name: the bank's name.
        chunk: prompts per encoder call.

    Returns:
        A :class:`TextBank` with L2-normalised float32 embeddings.

    Raises:
        InputError: no prompts, or an empty prompt.
        BundleError: the bundle has no fp32 text encoder.
    """

    prompts = [str(p) for p in prompts]
    if not prompts or any(not p.strip() for p in prompts):
        raise InputError("prompts", "are empty or include an empty prompt", "one or more non-empty prompts")
    graphs = bundle.manifest.text_encoders
    if "fp32" not in graphs:
        raise BundleError(f"bundle {str(bundle.path)!r}", "has no fp32 text encoder",
                          "a bundle exported with its text encoder, or one of its text banks")
    provider = text_bank_backend(canonical_backend(backend))
    graph = graphs["fp32"]
    tokenize = load_tokenizer(bundle.path, bundle.manifest.tokenizer, bundle.manifest.context_length)
    parts = []
    with create_runner(provider, bundle, graph.key, threads=threads) as encoder:
        for i in range(0, len(prompts), chunk):
            tokens = np.asarray(tokenize(prompts[i:i + chunk]), dtype=np.int64)
            parts.append(encoder.run({graph.inputs[0].name: tokens})[graph.outputs[0].name])
    emb = np.concatenate(parts).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
    return TextBank(name, tuple(prompts), emb, sha256_text(prompts))
