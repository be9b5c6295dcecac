"""Load an open_clip CLIP from a pretrained tag, a local checkpoint file or a seeded random init."""

from __future__ import annotations

# Lazy imports: safetensors is imported only where a checkpoint file is loaded.
import contextlib
import difflib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from foclip.errors import ModelError, did_you_mean
from foclip.manifest import PreprocessSpec
from foclip.network import OFFLINE_CHOICES, go_offline_if_unreachable

TINY_MODEL = "foclip-tiny"
_CONFIG_DIR = Path(__file__).parent / "configs"
# `--pretrained reference`: small CLIPs trained on openly licensed data by foclip itself and
# shipped in the package (foclip/models/reference/README.md is their model card).
REFERENCE = "reference"
REFERENCE_DIR = Path(__file__).parent / "reference"
REFERENCE_MODELS = ("foclip-ref-vit", "foclip-ref-rn")
_registered = False

HF_HUB_PREFIX = "hf-hub:"  # open_clip's schema: config and weights from a Hugging Face Hub repository
_PICKLE_SUFFIXES = (".pt", ".bin", ".pth")
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
        # Name the models that have one in the problem itself: a reader who typed ViT-B-32 learns
        # which --model the offline weights belong to without reading further.
        raise ModelError(f"pretrained {REFERENCE!r}",
                         f"has no checkpoint for {model_name}: only {' and '.join(REFERENCE_MODELS)} have one "
                         "(foclip's own small CLIPs, shipped in the package)",
                         f"--model {' or '.join(REFERENCE_MODELS)} (offline; --pretrained reference is then the "
                         f"default), or for {model_name} an open_clip tag, a checkpoint file or `random`")
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
    if model_name.startswith(HF_HUB_PREFIX):
        if not model_name.removeprefix(HF_HUB_PREFIX).strip("/"):
            raise ModelError(f"model {model_name!r}", "names no Hub repository", "hf-hub:ORG/REPO")
        return
    names = open_clip.list_models()
    if model_name not in names:
        close = difflib.get_close_matches(model_name, names, n=5, cutoff=0.5)
        hint = f"one of open_clip's model names (close: {', '.join(close)})" if close else (
            "one of open_clip's model names (see `open_clip.list_models()`) or hf-hub:ORG/REPO")
        raise ModelError(f"model {model_name!r}", "is not an open_clip model name", hint)


def _check_checkpoint(path: Path) -> None:
    """Refuse, before open_clip reads it, a file that is not a plain state dict.

    open_clip's ``load_state_dict`` retries a ``torch.load`` that raised TypeError without
    ``weights_only`` (an unrestricted unpickle on torch < 2.6 or with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD),
    and indexes the first key of whatever it got. Reading the file here with ``weights_only=True`` first
    keeps the safety whatever the torch version: a file that passes loads the same way there.
    """
    what = "a .safetensors file or a torch state dict (.pt/.bin) loadable with weights_only=True"
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:  # reads the header only
                keys = list(f.keys())
        else:
            try:  # zip checkpoints (every torch.save since 1.6) map instead of reading the tensors
                sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                sd = torch.load(str(path), map_location="cpu", weights_only=True)  # legacy format
            if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
                sd = sd["state_dict"]
            if not isinstance(sd, dict):
                raise ModelError(f"checkpoint {str(path)!r}", "does not hold a state dict", "a mapping of tensors")
            keys = list(sd)
    except ModelError:
        raise
    except Exception as exc:  # unreadable, unsafe, or not a checkpoint at all
        raise ModelError(f"checkpoint {str(path)!r}", f"cannot be read ({exc.__class__.__name__})", what) from exc
    if not keys:
        raise ModelError(f"checkpoint {str(path)!r}", "holds no tensors", "a state dict of an open_clip model")


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

    Checkpoint files go through open_clip's own ``load_checkpoint`` (its conversions of third-party
    and older state dicts, strict), after a ``weights_only=True`` read that refuses anything but
    tensors. The global torch RNG and the logging configuration are left as they were.

    Args:
        model_name: an open_clip model name (``ViT-B-32``, ``ViT-L-14-336``, ``RN50``, ``foclip-tiny``...)
            or ``hf-hub:ORG/REPO`` (config and weights from that Hub repository, where a network
            exists or it is cached; ``pretrained`` is then ignored, as open_clip does, except that
            a checkpoint file is refused).
        pretrained: an open_clip pretrained tag, a path to a checkpoint file, ``reference`` (the
            shipped checkpoints of ``foclip-ref-vit`` / ``foclip-ref-rn``), or ``random``.
        device: torch device string.
        seed: seed of the random init (only used with ``random``).

    Returns:
        The loaded model with its tokenizer and preprocessing.

    Raises:
        ModelError: unknown model name, unknown tag, unreadable checkpoint, or weights that
            cannot be downloaded (at once when offline). Never falls back to random weights silently.
    """
    register_configs()
    _check_name(model_name)
    path = reference_checkpoint(model_name) if pretrained == REFERENCE else Path(pretrained).expanduser()
    is_file = path.suffix in (".safetensors", *_PICKLE_SUFFIXES) or path.exists()
    if model_name.startswith(HF_HUB_PREFIX):
        if is_file and pretrained != REFERENCE:
            raise ModelError(f"checkpoint {pretrained!r}", f"cannot be combined with {model_name}",
                             "either an hf-hub: model (its repository holds the weights) or a built-in "
                             "model name with a checkpoint file")
        model = _download(model_name, None, f"model {model_name}")
        desc, random_init = "hf-hub", False
    elif pretrained == "random":
        with _seeded(seed):
            model = _create(model_name, None)
        desc, random_init = f"random(seed={seed})", True
    elif is_file:
        if not path.is_file():
            raise ModelError(f"checkpoint {pretrained!r}", "does not exist", CHOICES)
        _check_checkpoint(path)
        with _seeded(0):  # the init is overwritten; seeded only so the caller's RNG does not move
            model = _create(model_name, None)
        try:
            with _open_clip_logging():
                open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
        except (RuntimeError, KeyError, ValueError) as exc:  # missing/unexpected keys, shapes, conversions
            first = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
            raise ModelError(f"checkpoint {pretrained!r}", f"does not fit {model_name} ({first})",
                             f"a state dict of open_clip {model_name}") from exc
        desc, random_init = (REFERENCE if pretrained == REFERENCE else path.name), False
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise ModelError(f"pretrained {pretrained!r}", f"is not a tag of {model_name} nor a file"
                             + did_you_mean(pretrained, [*tags, "random", REFERENCE]),
                             f"{CHOICES}; tags of {model_name}: {', '.join(tags) or 'none'}")
        model = _download(model_name, pretrained, f"pretrained {model_name}/{pretrained}")
        desc, random_init = pretrained, False
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    text_cfg_ctx = getattr(model, "context_length", 77)
    embed_dim = getattr(model.visual, "output_dim", None)  # open_clip's towers record it
    if not isinstance(embed_dim, int):  # e.g. timm towers: ask the model (one forward pass)
        with torch.no_grad():
            embed_dim = int(model.encode_image(torch.zeros(1, 3, *_img_hw(model), device=device)).shape[-1])
    with _open_clip_logging():
        tokenizer = open_clip.get_tokenizer(model_name)
    return LoadedClip(
        model=model,
        tokenizer=tokenizer,
        model_name=model_name,
        pretrained=desc,
        random_init=random_init,
        preprocess=preprocess_spec(model),
        embed_dim=embed_dim,
        context_length=int(text_cfg_ctx),
    )


def _download(model_name: str, pretrained: str | None, subject: str) -> torch.nn.Module:
    """A model whose weights come from the network (a tag, or an hf-hub: repository), or its cache."""
    offline = _hub_offline()
    try:
        with _seeded(0):
            return _create(model_name, pretrained, require_pretrained=True)
    except Exception as exc:  # network or hub failures come in many classes
        if offline:
            raise ModelError(subject, f"cannot be downloaded: {offline}, and it is not cached on this machine",
                             OFFLINE_CHOICES) from exc
        raise ModelError(subject, f"weights could not be downloaded ({exc.__class__.__name__})", CHOICES) from exc


def _hub_offline() -> str | None:
    # One short probe instead of the hub's retries: offline mode loads cached weights and fails
    # uncached ones at once (see foclip.network).

    return go_offline_if_unreachable()


def _img_hw(model: torch.nn.Module) -> tuple[int, int]:
    size = model.visual.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the init of the model built inside, and give the caller its CPU RNG state back after.

    open_clip initialises through the global generator, so a local ``torch.Generator`` cannot reach
    it; ``fork_rng`` saves and restores the global state instead (CPU only: models are built on CPU).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class _DropRandomInitNotice(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded" warning: foclip says it itself, plainly."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _open_clip_logging() -> Iterator[None]:
    """Around one open_clip call: its root-logger records as the application configured, minus one.

    open_clip logs through the root logger (``logging.info``/``warning``). A filter drops its
    random-init notice and nothing else; where the application configured no handler, a temporary
    last-resort one keeps ``logging.info()`` from installing a lasting stderr handler (basicConfig).
    Levels and handlers are left as the application set them.
    """
    root = logging.getLogger()
    notice = _DropRandomInitNotice()
    added = [] if root.handlers else [logging.lastResort]
    for h in added:
        root.addHandler(h)
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)
        for h in added:
            root.removeHandler(h)


def _create(model_name: str, pretrained: str | None, require_pretrained: bool = False) -> torch.nn.Module:
    with _open_clip_logging():
        return open_clip.create_model(model_name, pretrained=pretrained, device="cpu",
                                      require_pretrained=require_pretrained, weights_only=True)
