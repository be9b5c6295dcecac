"""Embed a prompt set once into a (P, D) text bank."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foclip.models import LoadedClip, TextEncoder
from foclip.prompts import PromptSet


@dataclass(frozen=True)
class TorchTextBank:
    """A prompt set and its L2-normalised embeddings (P, D), float32 torch tensor, on the model's
    device: the attack's counterpart of the runtime's numpy :class:`foclip.runtime.TextBank`."""

    prompt_set: PromptSet
    embeddings: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.embeddings.device


def build_text_bank(loaded: LoadedClip, prompt_set: PromptSet, chunk: int = 256) -> TorchTextBank:
    """Embed every prompt, in prompt order, on the model's device.

    Args:
        loaded: the CLIP to embed with.
        prompt_set: the prompts.
        chunk: prompts per forward pass.

    Returns:
        The text bank; ``embeddings`` is (P, D) float32.
    """
    encoder = TextEncoder(loaded.model)
    device = next(loaded.model.parameters()).device
    prompts = list(prompt_set.prompts)
    parts = []
    with torch.no_grad():
        for start in range(0, len(prompts), chunk):
            tokens = loaded.tokenizer(prompts[start:start + chunk]).to(device)
            parts.append(encoder(tokens).float())
    return TorchTextBank(prompt_set, torch.cat(parts))
