"""Load an open_clip CLIP from a pretrained tag, a local checkpoint file or a seeded random init."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from foclip.errors import ModelError
from foclip.manifest import PreprocessSpec

TINY_MODEL = "foclip-tiny"
_CONFIG_DIR = Path(__file__).parent / "configs"
# `--pretrained reference`: small CLIPs trained on openly licensed data by foclip itself and
# shipped in the package (foclip/models/reference/README.md is their model card).
REFERENCE = "reference"
REFERENCE_DIR = Path(__file__).parent / "reference"
REFERENCE_MODELS = ("foclip-ref-vit", "foclip-ref-rn")
_registered = False

CHOICES = (
    "an open_clip pretrained tag (downloads where a network exists), "
    "a local checkpoint file (.safetensors, .pt, .bin), `reference` (foclip's shipped "
    f"{' / '.join(REFERENCE_MODELS)}, offline) or `random` (seeded random init, offline)"
)


def reference_checkpoint(model_name: str) -> Path:
    """The shipped checkpoint of a reference model.

    Args:
        model_name: ``foclip-ref-vit`` or ``foclip-ref-rn``.

    Returns:
        Path of its fp16 safetensors file inside the package.

    Raises:
        ModelError: the model has no reference checkpoint, or the file is missing from the install.
    """
    if model_name not in REFERENCE_MODELS:
        raise ModelError(f"pretrained {REFERENCE!r}", f"has no checkpoint for {model_name}",
                         f"--model {' or '.join(REFERENCE_MODELS)} with --pretrained reference")
    path = REFERENCE_DIR / f"{model_name}.safetensors"
    if not path.is_file():
        raise ModelError(f"reference checkpoint {str(path)!r}", "is missing from this install",
                         "the file shipped with foclip (or rebuild it: `foclip reference build`)")
    return path



def register_configs() -> None:
    """Register foclip's own open_clip configs (the tiny test model) once."""
    global _registered
    if not _registered:
        for path in sorted(_CONFIG_DIR.glob("*.json")):
            open_clip.add_model_config(path)
        _registered = True


@dataclass
class LoadedClip:
    """A frozen eval-mode CLIP and what describes it."""

    model: torch.nn.Module
    tokenizer: Any
    model_name: str
    pretrained: str  # what was asked for, normalised: tag, file name, or "random(seed=N)"
    random_init: bool
    preprocess: PreprocessSpec
    embed_dim: int
    context_length: int


def _check_name(model_name: str) -> None:
    names = open_clip.list_models()
    if model_name not in names:
        close = difflib.get_close_matches(model_name, names, n=5, cutoff=0.5)
        hint = f"one of open_clip's model names (close: {', '.join(close)})" if close else (
            "one of open_clip's model names (see `open_clip.list_models()`)")
        raise ModelError(f"model {model_name!r}", "is not an open_clip model name", hint)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or not a checkpoint at all
        raise ModelError(f"checkpoint {str(path)!r}", f"cannot be read ({exc.__class__.__name__})",
                         "a .safetensors file or a torch state dict (.pt/.bin) loadable with weights_only=True"
                         ) from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelError(f"checkpoint {str(path)!r}", "does not hold a state dict", "a mapping of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def preprocess_spec(model: torch.nn.Module) -> PreprocessSpec:
    """The model's eval preprocessing as a :class:`PreprocessSpec`."""
    cfg = getattr(model.visual, "preprocess_cfg", {})
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else size
    if cfg.get("resize_mode", "shortest") != "shortest":
        raise ModelError("preprocess", f"resize_mode {cfg.get('resize_mode')!r} is not supported",
                         "'shortest' (open_clip's default)")
    return PreprocessSpec(
        image_size=int(size),
        resize_mode="shortest",
        interpolation=str(cfg.get("interpolation", "bicubic")),
        crop="center",
        mean=tuple(float(x) for x in cfg.get("mean", PreprocessSpec.mean)),
        std=tuple(float(x) for x in cfg.get("std", PreprocessSpec.std)),
    )


def load_clip(model_name: str = "ViT-B-32", pretrained: str = "random", device: str = "cpu",
              seed: int = 0) -> LoadedClip:
    """Load a CLIP in eval mode with every parameter frozen.

    Args:
        model_name: an open_clip model name (``ViT-B-32``, ``ViT-L-14-336``, ``RN50``, ``foclip-tiny``...).
        pretrained: an open_clip pretrained tag, a path to a checkpoint file, ``reference`` (the
            shipped checkpoints of ``foclip-ref-vit`` / ``foclip-ref-rn``), or ``random``.
        device: torch device string.
        seed: seed of the random init (only used with ``random``).

    Returns:
        The loaded model with its tokenizer and preprocessing.

    Raises:
        ModelError: unknown model name, unknown tag, unreadable checkpoint, or weights that
            cannot be downloaded. Never falls back to random weights silently.
    """
    register_configs()
    _check_name(model_name)
    if pretrained == REFERENCE:
        path = reference_checkpoint(model_name)
    else:
        path = Path(pretrained).expanduser()
    if pretrained == "random":
        torch.manual_seed(seed)
        model = _create(model_name, None)
        desc, random_init = f"random(seed={seed})", True
    elif path.suffix in (".safetensors", ".pt", ".bin", ".pth") or path.exists():
        if not path.is_file():
            raise ModelError(f"checkpoint {pretrained!r}", "does not exist", CHOICES)
        model = _create(model_name, None)
        sd = _load_state_dict(path)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0][:200]
            raise ModelError(f"checkpoint {pretrained!r}", f"does not fit {model_name} ({first})",
                             f"a state dict of open_clip {model_name}") from exc
        desc, random_init = (REFERENCE if pretrained == REFERENCE else path.name), False
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            from foclip.errors import did_you_mean

            raise ModelError(f"pretrained {pretrained!r}", f"is not a tag of {model_name} nor a file"
                             + did_you_mean(pretrained, [*tags, "random", REFERENCE]),
                             f"{CHOICES}; tags of {model_name}: {', '.join(tags) or 'none'}")
        offline = _hub_offline()
        try:
            model = _create(model_name, pretrained)
        except Exception as exc:  # network or hub failures come in many classes
            from foclip.network import OFFLINE_CHOICES

            if offline:
                raise ModelError(f"pretrained {model_name}/{pretrained}",
                                 f"cannot be downloaded: {offline}, and it is not cached on this machine",
                                 OFFLINE_CHOICES) from exc
            raise ModelError(f"pretrained {model_name}/{pretrained}",
                             f"weights could not be downloaded ({exc.__class__.__name__})", CHOICES) from exc
        desc, random_init = pretrained, False
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    text_cfg_ctx = getattr(model, "context_length", 77)
    embed_dim = getattr(model.visual, "output_dim", None)  # open_clip's towers record it
    if not isinstance(embed_dim, int):  # e.g. timm towers: ask the model (one forward pass)
        with torch.no_grad():
            embed_dim = int(model.encode_image(torch.zeros(1, 3, *_img_hw(model), device=device)).shape[-1])
    return LoadedClip(
        model=model,
        tokenizer=open_clip.get_tokenizer(model_name),
        model_name=model_name,
        pretrained=desc,
        random_init=random_init,
        preprocess=preprocess_spec(model),
        embed_dim=embed_dim,
        context_length=int(text_cfg_ctx),
    )


def _hub_offline() -> str | None:
    # One short probe instead of the hub's retries: offline mode loads cached weights and fails
    # uncached ones at once (see foclip.network).
    from foclip.network import go_offline_if_unreachable

    return go_offline_if_unreachable()


def _img_hw(model: torch.nn.Module) -> tuple[int, int]:
    size = model.visual.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def _create(model_name: str, pretrained: str | None) -> torch.nn.Module:
    # open_clip logs a warning for random init; we say it ourselves, plainly, where it matters.
    # Quieten the root logger for this call only, so other libraries' warnings are not lost.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        return open_clip.create_model(model_name, pretrained=pretrained, device="cpu")
    finally:
        root.setLevel(level)
