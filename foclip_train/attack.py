"""FoCLIP optimisation: push images towards high CLIPscore over a whole prompt set.

After FoCLIP (feature-space misalignment of CLIPscore): an image's pixels are optimised so that
its embedding aligns with every prompt of a set at once. For an image ``x`` and prompts
``p_1..p_P`` with cosines ``c_i = cos(E_I(x), E_T(p_i))``::
    loss(x) = -mean_i c_i  +  alpha * var_i c_i  +  beta * guard(x)

An **adaptive** attacker (``AttackConfig.adaptive``, issue "open questions") also knows the
detector: it adds ``gamma * -mean_k mean_i cos(E_I(probe_k(x)), E_T(p_i))`` for the detector's
colour-space probes (``gray`` for the paper's grayscale rule), so the gray (or hue-rotated…) copy
stays aligned and the drop the detector looks for shrinks. The probe copies ride in the same
encoder call as the colour views.

``var`` is the population variance over the prompts (it keeps the alignment even, instead of
buying a high mean with a few prompts), and ``guard(x)`` is the mean over the image's pixels of
``ReLU(-x) + ReLU(x - 1)`` (how far, on average, the pixels stray outside [0, 1]). Because the
guard is a mean over the image's own pixels, its gradient per pixel shrinks with image area just
as the alignment gradient does (the antialiased resize spreads each model pixel over
``H*W/S**2`` input pixels), so ``beta`` means the same at any input resolution.

The loss of a batch is the *sum* of its images' losses, so each image's gradient is the one it
would get alone and the learning rate means the same at any batch size.

Shapes and ranges: every image is a float tensor (3, H, W) in [0, 1]. Where its pixels are
optimised is ``AttackConfig.space``:

* ``model`` (the paper's setting): the image is resized (shortest side) and centre-cropped to the
  model's S x S view once, and the (3, S, S) view is the optimised tensor. The returned image is
  that view (``output="model"``) or the perturbation lifted back onto the input
  (``output="input"``, :func:`lift_to_input`).
* ``native``: the (3, H, W) pixels are optimised and a differentiable resize + crop brings them to
  S inside each step. The resize spreads each model pixel's gradient over about ``H*W / (h'*w')``
  input pixels (h' x w' is the resized size), so a step of ``lr`` on the input moves the model view
  that many times less than a step of ``lr`` on the view. Each image's learning rate is therefore
  scaled once, at step 1, by ``|g| / |R(R^T g)|``: ``g`` is the loss gradient on the model view,
  ``R^T g`` the gradient it gives the input pixels and ``R`` the resize + crop, so the first
  step moves the model view exactly as far (RMS) as ``lr`` does in ``model`` space, whatever the
  size and the resize kernel (:func:`native_lr_scale`).

The model is frozen and in eval mode; only the pixels get gradients. The text bank is a (P, D)
tensor of L2-normalised prompt embeddings, computed once.

Best iterate: every ``check_every`` steps (and at step 0 and the last step) each image is
clamped to [0, 1], rounded to 8 bits and scored (per-pair clamped CLIPscore on the 0..w scale,
as :mod:`foclip.scoring` defines it); the best-scoring 8-bit image is kept, so a diverging run
never returns an image that scores below its start.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from foclip.errors import InputError
from foclip.models.preprocess import resize_crop
from foclip.runtime.preprocess import center_crop_box, resized_hw
from foclip.scoring import PROBES
from foclip_train.config import AttackConfig

__all__ = [
    "AttackConfig",
    "AttackResult",
    "adaptive_term",
    "clipscore_torch",
    "embed_images",
    "foclip_attack",
    "foclip_loss",
    "lift_to_input",
    "native_lr_scale",
    "pixel_guard",
    "probe_torch",
    "quantize",
]

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class AttackResult:
    """Best 8-bit iterate of each image and where it came from.

    Attributes:
        images: uint8 (3, H, W) tensors on the CPU: each the size of its input, or S x S with
            ``output="model"``.
        best_score: torch-side CLIPscore (0..w) of each returned image.
        best_step: the step each returned image comes from (0 = the unchanged input).
        start_score: torch-side CLIPscore of each input (step 0).
        final_guard: pixel guard of each last raw (unclamped) iterate: how far the optimisation
            strayed outside [0, 1] (mean excess per pixel value).
        trace: (step, scores of the current iterates) at every check.
        final_view: (3, S, S) float model view of each last raw iterate, on the CPU (what the
            encoder saw at the last step; compare with the model view of the input to measure
            how far the optimisation moved it).
        lr: the learning rate each image was optimised with (``lr`` in ``model`` space, ``lr``
            times :func:`native_lr_scale` in ``native`` space).
    """

    images: list[torch.Tensor]
    best_score: list[float]
    best_step: list[int]
    start_score: list[float]
    final_guard: list[float] = field(default_factory=list)
    trace: list[tuple[int, list[float]]] = field(default_factory=list)
    final_view: list[torch.Tensor] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


def pixel_guard(x: torch.Tensor) -> torch.Tensor:
    """Mean out-of-range excess of one image's pixels: ``mean(ReLU(-x) + ReLU(x - 1))``.

    Args:
        x: pixels of one image, any shape.

    Returns:
        A scalar tensor (0 when every pixel is in [0, 1]).
    """
    return (torch.relu(-x) + torch.relu(x - 1)).mean()


def foclip_loss(cos: torch.Tensor, guard: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Per-image FoCLIP loss ``-mean(cos) + alpha * var(cos) + beta * guard``.

    Args:
        cos: (B, P) cosines of each image against each prompt.
        guard: (B,) pixel-guard value of each image (see :func:`pixel_guard`).
        alpha: variance weight.
        beta: pixel-guard weight.

    Returns:
        (B,) losses; sum them for a batch so that images stay independent.
    """
    return -cos.mean(dim=1) + alpha * cos.var(dim=1, correction=0) + beta * guard


def adaptive_term(probe_emb: torch.Tensor, text_bank: torch.Tensor, n: int) -> torch.Tensor:
    """Per-image adaptive term: minus the mean cosine of each probe copy, averaged over the probes.

    Args:
        probe_emb: (K * B, D) embeddings of K probe copies of the B images, probe-major.
        text_bank: (P, D) prompt embeddings.
        n: B.

    Returns:
        (B,) values to add (times gamma) to the FoCLIP loss.
    """
    cos = (probe_emb @ text_bank.T).mean(dim=1).reshape(-1, n)  # (K, B)
    return -cos.mean(dim=0)


def probe_torch(x: torch.Tensor, name: str) -> torch.Tensor:
    """The colour-space probe :func:`foclip.scoring.apply_probe` in torch (differentiable)."""

    m = torch.as_tensor(PROBES[name], dtype=x.dtype, device=x.device)
    return torch.einsum("ij,bjhw->bihw", m, x).clamp(0.0, 1.0)


def clipscore_torch(image_emb: torch.Tensor, text_bank: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-pair clamped CLIPscore in torch, the same definition as :func:`foclip.scoring.clipscore`.

    Args:
        image_emb: (B, D) L2-normalised image embeddings.
        text_bank: (P, D) L2-normalised prompt embeddings.
        scale: w.

    Returns:
        (B,) float64 scores on the 0..w scale.
    """
    cos = image_emb.double() @ text_bank.double().T
    return scale * cos.clamp_min(0).mean(dim=1)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8 bits, as a saved PNG would hold it (float, in [0, 1])."""
    return torch.round(x.detach().clamp(0, 1) * 255) / 255


def embed_images(
    images: Sequence[torch.Tensor],
    image_encoder: torch.nn.Module,
    image_size: int,
    interpolation: str = "bicubic",
    amp: str = "none",
) -> torch.Tensor:
    """Resize/crop each (1, 3, H, W) image to the model size and embed them as one batch.

    Args:
        images: (1, 3, H, W) tensors in about [0, 1], sizes may differ.
        image_encoder: [0, 1] NCHW at ``image_size`` -> L2-normalised (B, D).
        image_size: the model's input side S.
        interpolation: resize interpolation of the model's eval transform.
        amp: autocast dtype name (see :data:`AMP_DTYPES`).

    Returns:
        (B, D) float32 embeddings.
    """
    views = torch.cat([resize_crop(x, image_size, interpolation) for x in images])
    dtype = AMP_DTYPES[amp]
    ctx = (torch.autocast(views.device.type, dtype=dtype) if dtype is not None
           else contextlib.nullcontext())
    with ctx:
        emb = image_encoder(views)
    return emb.float()


def native_lr_scale(view_grad: torch.Tensor, pixel_grad: torch.Tensor, image_size: int,
                    interpolation: str = "bicubic") -> float:
    """Learning-rate multiplier that makes a native-resolution step move the model view as in model space.

    A step ``-lr * g`` on the model view moves it by ``lr * |g|``. At native resolution the pixels
    get ``R^T g`` (``R``: resize + crop) and a step of ``-lr' * R^T g`` moves the view by
    ``lr' * |R(R^T g)|``; the two are equal for ``lr' = lr * |g| / |R(R^T g)|``. For a shortest-side
    downscale this is about the input-to-resized area ratio ``H*W / (h'*w')`` divided by the
    kernel's energy (measured 0.65-0.69 of the area ratio for antialiased bicubic, docs/generate.md).

    Args:
        view_grad: (1, 3, S, S) gradient of the loss on the model view.
        pixel_grad: (1, 3, H, W) gradient of the same loss on the input pixels.
        image_size: S.
        interpolation: the resize interpolation.

    Returns:
        The multiplier (1.0 when the gradient is zero).
    """
    with torch.no_grad():
        moved = resize_crop(pixel_grad, image_size, interpolation).norm()
        g = view_grad.norm()
    return float(g / moved) if moved > 0 and g > 0 else 1.0


def lift_to_input(original: torch.Tensor, view_start: torch.Tensor, view_adv: torch.Tensor,
                  image_size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Bring a model-view perturbation back onto the input image.

    The perturbation ``view_adv - view_start`` (not the image) is resized with antialiasing to
    the footprint of the centre crop on the input (the input pixels the model view was made from)
    and added there; pixels outside the crop, which the model never sees, are left unchanged.
    Resizing down and back up is not an exact inverse, so part of the perturbation is lost: the
    score of the saved file measures what survives.

    Args:
        original: (3, H, W) float input in [0, 1].
        view_start: (3, S, S) model view of ``original`` (the optimisation's start).
        view_adv: (3, S, S) optimised model view.
        image_size: S.
        interpolation: ``bicubic`` or ``bilinear``.

    Returns:
        (3, H, W) float image clamped to [0, 1].
    """
    h, w = original.shape[-2:]
    nh, nw = resized_hw(h, w, image_size)
    top, left = center_crop_box(nh, nw, image_size)
    y0, y1 = round(top * h / nh), round((top + image_size) * h / nh)
    x0, x1 = round(left * w / nw), round((left + image_size) * w / nw)
    delta = (view_adv - view_start).float().unsqueeze(0)
    up = F.interpolate(delta, size=(y1 - y0, x1 - x0), mode=interpolation, align_corners=False, antialias=True)[0]
    out = original.float().clone()
    out[:, y0:y1, x0:x1] += up.to(out.device)
    return out.clamp(0, 1)


def foclip_attack(
    images: Sequence[torch.Tensor],
    image_encoder: torch.nn.Module,
    text_bank: torch.Tensor,
    cfg: AttackConfig,
    image_size: int,
    interpolation: str = "bicubic",
    on_step: Callable[[int, list[float] | None], None] | None = None,
) -> AttackResult:
    """Run FoCLIP on a batch of images (the one optimisation loop of foclip).

    Args:
        images: (3, H, W) tensors, float in [0, 1] or uint8, on the encoder's device.
        image_encoder: frozen, eval-mode encoder taking [0, 1] NCHW at ``image_size``.
        text_bank: (P, D) L2-normalised prompt embeddings on the same device.
        cfg: the optimisation knobs (``cfg.space``: where the pixels live; ``cfg.output``: the
            returned size).
        image_size: the model's input side S.
        interpolation: resize interpolation of the model's eval transform.
        on_step: called after every step with ``(step, None)`` and at every check with
            ``(step, current scores)``; for progress display.

    Returns:
        The best 8-bit iterate of each image (see :class:`AttackResult`).
    """
    if not images:
        return AttackResult([], [], [], [], [])
    # Contiguous NCHW: a permuted HWC source would otherwise stay channels-last (clone keeps strides),
    # and the step then ran 3.7x slower than bare forward+backward for ViT-B-32 on CPU.
    starts = [_as_float(img).unsqueeze(0).clone(memory_format=torch.contiguous_format) for img in images]
    native = cfg.space == "native"
    if native:
        pixels = [x.requires_grad_(True) for x in starts]
        views0: list[torch.Tensor] = []
    else:
        with torch.no_grad():
            views0 = [resize_crop(x, image_size, interpolation).contiguous() for x in starts]
        pixels = [v.clone().requires_grad_(True) for v in views0]
    lrs = [cfg.lr] * len(pixels)  # native: rescaled per image at step 1 (native_lr_scale)
    # One parameter group per image, so that each image can have its own learning rate.
    opt = torch.optim.SGD([{"params": [p], "lr": cfg.lr} for p in pixels], lr=cfg.lr, momentum=cfg.momentum)
    n = len(pixels)
    best: list[torch.Tensor] = [torch.empty(0)] * n  # uint8 (3, H, W): a quarter of a float copy
    best_score = [-math.inf] * n
    best_step = [0] * n
    trace: list[tuple[int, list[float]]] = []

    def check(step: int) -> None:
        with torch.no_grad():
            q = [quantize(p) for p in pixels]
            emb = embed_images(q, image_encoder, image_size, interpolation, cfg.amp)
            scores = clipscore_torch(emb, text_bank, cfg.score_scale).tolist()
        for i, s in enumerate(scores):
            if s > best_score[i]:
                best_score[i], best_step[i] = s, step
                best[i] = torch.round(q[i][0] * 255).to(torch.uint8)
        trace.append((step, scores))
        if on_step is not None:
            on_step(step, scores)

    check(0)
    for step in range(1, cfg.iters + 1):
        opt.zero_grad(set_to_none=True)
        # The model view of each image (identity in model space); embed_images' own resize is then a no-op.
        views = [resize_crop(p, image_size, interpolation) for p in pixels] if native else pixels
        if native and step == 1:
            for v in views:
                v.retain_grad()
        # Adaptive attacker: the probe copies of each model view ride in the same encoder call.
        probed = [probe_torch(resize_crop(v, image_size, interpolation), a) for a in cfg.adaptive for v in views]
        emb = embed_images([*views, *probed], image_encoder, image_size, interpolation, cfg.amp)
        cos = emb[:n] @ text_bank.T
        guard = torch.stack([pixel_guard(p) for p in pixels])
        loss = foclip_loss(cos, guard, cfg.alpha, cfg.beta)
        if cfg.adaptive:
            loss = loss + cfg.adaptive_weight * adaptive_term(emb[n:], text_bank, n)
        loss.sum().backward()
        if native and step == 1:
            for i, (p, v) in enumerate(zip(pixels, views)):
                lrs[i] = cfg.lr * native_lr_scale(v.grad, p.grad, image_size, interpolation)
                opt.param_groups[i]["lr"] = lrs[i]
            del views
        opt.step()
        if on_step is not None:
            on_step(step, None)
        if step % cfg.check_every == 0 or step == cfg.iters:
            check(step)
    with torch.no_grad():
        final_view = [resize_crop(p.detach(), image_size, interpolation)[0].float().cpu() for p in pixels]
        if cfg.space == "model" and cfg.output == "input":
            best = [torch.round(quantize(lift_to_input(starts[i][0], views0[i][0], best[i].float() / 255,
                                                       image_size, interpolation)) * 255).to(torch.uint8)
                    for i in range(n)]
    out = [b.cpu() for b in best]
    final_guard = [pixel_guard(p.detach()).item() for p in pixels]
    return AttackResult(out, best_score, best_step, trace[0][1], final_guard, trace, final_view, lrs)
def _as_float(img: torch.Tensor) -> torch.Tensor:
    if img.ndim != 3 or img.shape[0] != 3:
        raise InputError(f"image tensor of shape {tuple(img.shape)}", "is not (3, H, W)", "an RGB CHW tensor")
    if img.dtype == torch.uint8:
        return img.float() / 255
    return img.detach().float()
