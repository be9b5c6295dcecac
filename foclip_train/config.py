"""Frozen configs of FoCLIP generation (standard library only, so the CLI can read defaults fast)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from foclip.errors import InputError, did_you_mean
from foclip.scoring import DEFAULT_SCALE, PROBES

AMP_NAMES = ("none", "bf16", "fp16")
SPACES = ("native", "model")
OUTPUTS = ("input", "model")
MAX_PIXELS = 40_000_000
MIN_SIDE = 8


@dataclass(frozen=True)
class AttackConfig:
    """Knobs of the FoCLIP optimisation (defaults: see docs/generate.md for the alpha/beta sweep).

    Attributes:
        iters: SGD steps per image.
        lr: SGD learning rate (on [0, 1] pixels, for a loss summed over images).
        momentum: SGD momentum.
        alpha: weight of the variance of the cosines over the prompt set.
        beta: weight of the pixel guard (mean out-of-range excess of the image's pixels).
        check_every: k, steps between best-iterate checks (also checked at step 0 and the last step).
        score_scale: w, CLIPscore scale (100 torchmetrics-style, 2.5 Hessel et al.).
        amp: ``none`` (fp32), ``bf16`` or ``fp16`` autocast of the image encoder.
        space: where the optimised pixels live. ``model``: the image is resized and centre-cropped
            to the model's S x S view once, and that view is optimised (the FoCLIP paper's setting);
            ``native``: the pixels stay at the input's resolution and the resize/crop runs inside
            every step, with each image's learning rate multiplied by ``H*W / (h'*w')`` (input area
            over resized area) so that one step moves the model view about as much as ``lr`` does
            in ``model`` space (see docs/generate.md, "Optimisation space").
        output: size of the returned image: ``input`` (the input's width x height) or ``model``
            (the S x S view; only with ``space="model"``). In ``model`` space with ``input`` output
            the optimised perturbation is lifted back onto the input (:func:`lift_to_input`).
        adaptive: colour-space probes (:data:`foclip.scoring.PROBES`) whose copies of the image the
            attacker keeps aligned too: ``("gray",)`` is an attacker who knows the grayscale
            detector; the multi-probe detector's probes adapt it to that one. Empty: the paper's
            attack.
        adaptive_weight: gamma, the weight of the probes' alignment term.
    """

    iters: int = 1000
    lr: float = 7.0
    momentum: float = 0.5
    alpha: float = 1.0
    beta: float = 10.0
    check_every: int = 10
    score_scale: float = DEFAULT_SCALE
    amp: str = "none"
    space: str = "native"
    output: str = "input"
    adaptive: tuple[str, ...] = ()
    adaptive_weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "adaptive", tuple(self.adaptive))  # a list from JSON or a caller
        checks = [
            ("iters", self.iters >= 0, "an integer >= 0"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "a finite number > 0"),
            ("momentum", 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("alpha", self.alpha >= 0 and math.isfinite(self.alpha), "a finite number >= 0"),
            ("beta", self.beta >= 0 and math.isfinite(self.beta), "a finite number >= 0"),
            ("check_every", self.check_every >= 1, "an integer >= 1"),
            ("score_scale", self.score_scale > 0, "a number > 0 (100 or 2.5)"),
            ("amp", self.amp in AMP_NAMES, f"one of {', '.join(AMP_NAMES)}"),
            ("space", self.space in SPACES, f"one of {', '.join(SPACES)}"),
            ("output", self.output in OUTPUTS, f"one of {', '.join(OUTPUTS)}"),
            ("adaptive", all(a in PROBES for a in self.adaptive) and len(set(self.adaptive)) == len(self.adaptive),
             f"distinct probe names from {', '.join(PROBES)}"),
            ("adaptive_weight", self.adaptive_weight >= 0 and math.isfinite(self.adaptive_weight),
             "a finite number >= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                hint = "".join(did_you_mean(a, PROBES) for a in self.adaptive if a not in PROBES) if (
                    name == "adaptive") else did_you_mean(getattr(self, name), AMP_NAMES) if name == "amp" else ""
                raise InputError(f"attack {name}={getattr(self, name)!r}", "is out of range" + hint, expected)
        if self.output == "model" and self.space != "model":
            raise InputError("attack output='model'", "needs space='model'",
                             "output='input' with space='native', or space='model'")



@dataclass(frozen=True)
class GenerateConfig:
    """Everything that decides what ``foclip generate`` writes.

    Attributes:
        model: open_clip model name.
        pretrained: open_clip tag, checkpoint file, or ``random``.
        prompts: ``artistic``, ``imagenet-N`` or a prompt file.
        attack: the optimisation knobs.
        batch: images optimised together.
        seed: random-init seed (the built-in prompt sets do not depend on it).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        max_pixels: inputs with more pixels are refused before decoding.
        min_side: inputs with a side shorter than this are refused.
    """

    model: str = "ViT-B-32"
    pretrained: str = "random"
    prompts: str = "artistic"
    attack: AttackConfig = field(default_factory=AttackConfig)
    batch: int = 4
    seed: int = 0
    device: str = "auto"
    max_pixels: int = MAX_PIXELS
    min_side: int = MIN_SIDE

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise InputError(f"batch={self.batch}", "is out of range", "an integer >= 1")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise InputError(f"device {self.device!r}", "is not supported" + did_you_mean(self.device, ("auto", "cpu", "cuda")),
                             "auto, cpu, cuda or cuda:N")


