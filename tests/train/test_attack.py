"""Tests of foclip_train/attack.py: loss terms, gradients, guard, batch independence, best iterate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foclip.errors import InputError
from foclip.scoring import clipscore
from foclip_train.attack import (
    AttackConfig,
    clipscore_torch,
    embed_images,
    foclip_attack,
    foclip_loss,
    pixel_guard,
    quantize,
)


def test_pixel_guard_matches_hand_computed():
    x = torch.tensor([-0.5, 0.5, 1.25, 1.0, 0.0, 0.2, 0.9, 0.1])
    # excess: 0.5 + 0.25 over 8 pixels
    assert pixel_guard(x).item() == pytest.approx(0.75 / 8)
    assert pixel_guard(torch.rand(3, 5, 5)).item() == 0.0


def test_foclip_loss_matches_hand_computed():
    cos = torch.tensor([[0.2, 0.4], [0.1, -0.3]])
    guard = torch.tensor([0.5, 0.0])
    loss = foclip_loss(cos, guard, alpha=2.0, beta=3.0)
    # image 0: -0.3 + 2 * var(0.2, 0.4) [= 0.01] + 3 * 0.5 ; image 1: 0.1 + 2 * 0.04 + 0
    assert loss.tolist() == pytest.approx([-0.3 + 0.02 + 1.5, 0.1 + 0.08], abs=1e-6)


def test_clipscore_torch_equals_scoring_module():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(3, 16, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(7, 16, generator=g), dim=-1)
    for w in (100.0, 2.5):
        ref = clipscore(img.numpy(), txt.numpy(), scale=w)
        np.testing.assert_allclose(clipscore_torch(img, txt, w).numpy(), ref, rtol=1e-12)


def test_quantize_is_clamped_8bit():
    x = torch.tensor([-0.2, 0.0, 0.5, 0.501, 1.3])
    q = quantize(x)
    assert q.min() >= 0 and q.max() <= 1
    assert torch.equal(q * 255, torch.round(q * 255))


@pytest.mark.parametrize("kwargs", [{"lr": 0}, {"momentum": 1.0}, {"alpha": -1}, {"check_every": 0},
                                    {"amp": "fp8"}, {"iters": -1}])
def test_attack_config_rejects_bad_values(kwargs):
    with pytest.raises(InputError, match="Expected"):
        AttackConfig(**kwargs)


def test_gradients_reach_only_pixels(tiny, tiny_encoder, photo_tensors):
    loaded, bank = tiny
    assert not loaded.model.training
    x = (photo_tensors["chelsea"].float() / 255).unsqueeze(0).requires_grad_(True)
    emb = embed_images([x], tiny_encoder, loaded.preprocess.image_size)
    foclip_loss(emb @ bank.embeddings.T, pixel_guard(x)[None], 1.0, 1.0).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loaded.model.parameters())


def test_attack_leaves_model_untouched(tiny, tiny_encoder, photo_tensors):
    loaded, bank = tiny
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    foclip_attack([photo_tensors["coffee"]], tiny_encoder, bank.embeddings, AttackConfig(iters=3), 64)
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not loaded.model.training


def test_pixel_guard_keeps_iterates_in_range(tiny, tiny_encoder):
    _loaded, bank = tiny
    # A half-black, half-white image: any push outwards leaves [0, 1] at once.
    img = torch.zeros(3, 64, 64)
    img[:, :, 32:] = 1.0
    run = lambda beta: foclip_attack(
        [img], tiny_encoder, bank.embeddings, AttackConfig(iters=40, beta=beta, alpha=0.0), 64)
    free, guarded = run(0.0), run(10.0)
    assert free.final_guard[0] > 1e-2  # without the guard the raw iterate leaves [0, 1] ...
    assert guarded.final_guard[0] < free.final_guard[0] / 20  # ... with it, it stays (nearly) inside
    for res in (free, guarded):
        assert res.images[0].dtype == torch.uint8 and res.images[0].shape == img.shape


def test_batch_independence(tiny, tiny_encoder, photo_tensors):
    _loaded, bank = tiny
    cfg = AttackConfig(iters=10, check_every=5)
    alone = foclip_attack([photo_tensors["astronaut"]], tiny_encoder, bank.embeddings, cfg, 64)
    batch = foclip_attack([photo_tensors["chelsea"], photo_tensors["astronaut"], photo_tensors["rocket"]],
                          tiny_encoder, bank.embeddings, cfg, 64)
    assert batch.best_score[1] == pytest.approx(alone.best_score[0], rel=1e-4)
    assert batch.best_step[1] == alone.best_step[0]
    diff = (batch.images[1].int() - alone.images[0].int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


def test_thirty_iterations_raise_mean_score_on_real_photos(tiny, tiny_encoder, photo_tensors):
    _loaded, bank = tiny
    imgs = list(photo_tensors.values())
    res = foclip_attack(imgs, tiny_encoder, bank.embeddings, AttackConfig(iters=30), 64)
    start, best = np.mean(res.start_score), np.mean(res.best_score)
    assert best > 2 * start, (start, best)
    assert all(b >= s for b, s in zip(res.best_score, res.start_score))
    assert [tuple(i.shape) for i in res.images] == [tuple(i.shape) for i in imgs]


def test_best_iterate_never_scores_below_start(tiny, tiny_encoder, photo_tensors):
    _loaded, bank = tiny
    # A huge learning rate makes the iterates jump around; the returned image must still be the best seen.
    cfg = AttackConfig(iters=25, lr=1e5, check_every=10)
    res = foclip_attack(list(photo_tensors.values()), tiny_encoder, bank.embeddings, cfg, 64)
    assert [s for s, _ in res.trace] == [0, 10, 20, 25]
    for i, best in enumerate(res.best_score):
        assert best == max(scores[i] for _, scores in res.trace)
        assert best >= res.start_score[i]
        # The returned image is the one that scored best: re-score it.
        q = res.images[i].float().unsqueeze(0) / 255
        with torch.no_grad():
            again = clipscore_torch(embed_images([q], tiny_encoder, 64), bank.embeddings, 100.0).item()
        assert again == pytest.approx(best, rel=1e-5)


def test_zero_iterations_return_the_input(tiny, tiny_encoder, photo_tensors):
    _, bank = tiny
    img = photo_tensors["rocket"]
    res = foclip_attack([img], tiny_encoder, bank.embeddings, AttackConfig(iters=0), 64)
    assert torch.equal(res.images[0], img) and res.best_step == [0]


@pytest.mark.slow
def test_vit_b_32_raises_scores_on_real_photos(photo_tensors):
    from foclip.models import ImageEncoder, load_clip
    from foclip.prompts import load_prompt_set
    from foclip_train.text_bank import build_text_bank

    loaded = load_clip("ViT-B-32", "random", seed=0)
    bank = build_text_bank(loaded, load_prompt_set("artistic")).embeddings
    enc = ImageEncoder(loaded.model, loaded.preprocess)
    imgs = [photo_tensors["chelsea"], photo_tensors["rocket"]]
    res = foclip_attack(imgs, enc, bank, AttackConfig(iters=10, check_every=5), 224)
    assert np.mean(res.best_score) > 2 * np.mean(res.start_score)
    assert all(b >= s for b, s in zip(res.best_score, res.start_score))


# ----------------------------------------------------------------------------- optimisation space


def test_space_and_output_are_validated():
    with pytest.raises(InputError, match="needs space='model'"):
        AttackConfig(space="native", output="model")
    with pytest.raises(InputError, match="Expected"):
        AttackConfig(space="pixels")


@pytest.mark.parametrize("name", ["chelsea", "astronaut", "rocket"])
def test_native_and_model_space_take_equal_steps_in_the_model_view(tiny, tiny_encoder, photo_tensors, name):
    from foclip.models.preprocess import resize_crop

    _loaded, bank = tiny
    img = photo_tensors[name]
    view0 = resize_crop(img.float().unsqueeze(0) / 255, 64)[0]
    moved = {}
    for space, output in (("model", "model"), ("native", "input")):
        # beta 0: the bicubic view of a photo overshoots [0, 1] a little, and the guard would then
        # add a model-space-only term to the first step.
        res = foclip_attack([img], tiny_encoder, bank.embeddings,
                            AttackConfig(iters=1, beta=0.0, space=space, output=output), 64)
        moved[space] = (res.final_view[0] - view0).flatten()
        lr = res.lr[0]
    ratio = (moved["native"].norm() / moved["model"].norm()).item()
    assert ratio == pytest.approx(1.0, abs=1e-3)
    # Same direction too (not only the same length): measured cosines 0.90-0.95 on these photos.
    assert torch.nn.functional.cosine_similarity(moved["native"], moved["model"], dim=0) > 0.8
    # The native learning rate grows with the input's area over the model view's (about 0.65x that ratio).
    h, w = img.shape[-2:]
    assert lr > 7 * 0.3 * (min(h, w) / 64) ** 2


def test_unscaled_native_step_would_be_far_smaller(tiny, tiny_encoder, photo_tensors):
    """The rescaling is what equalises the steps: without it (lr fixed at 7) chelsea's view would move ~15x less."""

    _loaded, bank = tiny
    img = photo_tensors["chelsea"]
    res = foclip_attack([img], tiny_encoder, bank.embeddings, AttackConfig(iters=1, beta=0.0), 64)
    assert res.lr[0] / 7 > 10


def test_model_space_outputs(tiny, tiny_encoder, photo_tensors):
    _loaded, bank = tiny
    img = photo_tensors["chelsea"]  # 300 x 451: the crop leaves side strips untouched
    small = foclip_attack([img], tiny_encoder, bank.embeddings,
                          AttackConfig(iters=5, space="model", output="model"), 64)
    lifted = foclip_attack([img], tiny_encoder, bank.embeddings,
                           AttackConfig(iters=5, space="model", output="input"), 64)
    assert tuple(small.images[0].shape) == (3, 64, 64)
    assert tuple(lifted.images[0].shape) == tuple(img.shape)
    assert small.best_score == lifted.best_score
    diff = (lifted.images[0].int() - img.int()).abs()
    assert diff.sum() > 0
    # Pixels outside the centre crop's footprint (columns < 75 and >= 375) are the input's own.
    assert diff[:, :, :70].max() == 0 and diff[:, :, 380:].max() == 0


def test_lift_to_input_of_a_zero_perturbation_is_the_input():
    from foclip_train.attack import lift_to_input

    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 90, 130, generator=g)
    view = torch.rand(3, 32, 32, generator=g)
    assert torch.allclose(lift_to_input(img, view, view, 32), img)
    out = lift_to_input(img, view, view + 0.1, 32)
    assert out.shape == img.shape and (out - img)[:, :, 65].mean() > 0.05


def test_probe_torch_matches_the_runtime_probes():
    import numpy as np

    from foclip.scoring import PROBES, apply_probe
    from foclip_train.attack import probe_torch

    x = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    for name in PROBES:
        got = probe_torch(torch.from_numpy(x), name).numpy()
        assert np.abs(got - apply_probe(x, name, channel_axis=1)).max() < 1e-6, name


def test_adaptive_attacker_keeps_the_gray_copy_aligned(sample_photos):
    """Same photos, steps and seed: the gray-aware attacker ends with a higher gray score and a smaller
    drop than the paper's attacker (mechanics on the tiny random model)."""
    import numpy as np

    from foclip.models import ImageEncoder, load_clip
    from foclip.prompts import load_prompt_set
    from foclip.scoring import drop
    from foclip_train.attack import clipscore_torch, foclip_attack, probe_torch
    from foclip_train.text_bank import build_text_bank

    clip = load_clip("foclip-tiny", "random", seed=0)
    enc = ImageEncoder(clip.model, clip.preprocess).eval()
    bank = build_text_bank(clip, load_prompt_set("artistic")).embeddings
    imgs = [torch.from_numpy(a).permute(2, 0, 1) for a in list(sample_photos.values())[:3]]
    s = clip.preprocess.image_size

    def scores(cfg):
        res = foclip_attack(imgs, enc, bank, cfg, s)
        with torch.no_grad():
            views = torch.stack([r.float() / 255 for r in res.images])
            c = clipscore_torch(enc(views), bank, 100.0).numpy()
            g = clipscore_torch(enc(probe_torch(views, "gray")), bank, 100.0).numpy()
        return c, g

    base = AttackConfig(iters=15, check_every=5, space="model", output="model")
    c0, g0 = scores(base)
    c1, g1 = scores(AttackConfig(iters=15, check_every=5, space="model", output="model", adaptive=("gray",),
                                 adaptive_weight=1.0))
    assert np.mean(g1) > np.mean(g0)
    assert np.mean(drop(c1, g1)) < np.mean(drop(c0, g0))
    with pytest.raises(InputError, match="adaptive"):
        AttackConfig(adaptive=("sepia",))
