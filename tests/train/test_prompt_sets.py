"""Built-in prompt sets of foclip/prompts.py: masterpieces, artistic, imagenet-N (fixed, nested)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from foclip.errors import InputError
from foclip.prompts import IMAGENET_TEMPLATE, imagenet_prompts, load_prompt_set


def test_masterpieces_are_ten_distinct_prompts():
    ps = load_prompt_set("masterpieces")
    assert ps.name == "masterpieces" and len(ps) == 10 and len(set(ps.prompts)) == 10
    assert ps.sha256 != load_prompt_set("artistic").sha256


def test_imagenet_sets_are_nested():
    sets = {n: load_prompt_set(f"imagenet-{n}").prompts for n in (25, 50, 100, 1000)}
    assert sets[50][:25] == sets[25] and sets[100][:50] == sets[50] and sets[1000][:100] == sets[100]
    assert set(sets[25]) < set(sets[50]) < set(sets[100])
    assert len(set(sets[100])) == 100


def test_imagenet_sets_use_one_template_and_open_clip_class_names():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    prompts = load_prompt_set("imagenet-100").prompts
    head, tail = IMAGENET_TEMPLATE.split("{}")
    assert all(p.startswith(head) and p.endswith(tail) for p in prompts)
    # Every ImageNet class once (open_clip names two pairs of classes alike: missile, sunglasses).
    classes = [p[len(head):len(p) - len(tail)] for p in load_prompt_set("imagenet-1000").prompts]
    assert sorted(classes) == sorted(IMAGENET_CLASSNAMES)


def test_imagenet_sets_do_not_depend_on_the_seed():
    a = [load_prompt_set("imagenet-50", seed=s) for s in (0, 1, 12345)]
    assert a[0].prompts == a[1].prompts == a[2].prompts
    assert a[0].sha256 == a[1].sha256 == a[2].sha256


def test_seeded_draw_is_kept_for_parity_text():
    assert imagenet_prompts(20, seed=0) != imagenet_prompts(20, seed=1)
    assert imagenet_prompts(20, seed=3) == imagenet_prompts(20, seed=3)


@pytest.mark.parametrize("spec", ["imagenet-0", "imagenet-1001"])
def test_imagenet_out_of_range(spec):
    with pytest.raises(InputError, match="out-of-range class count"):
        load_prompt_set(spec)


def test_builtin_sets_load_without_open_clip():
    code = ("import sys; from foclip.prompts import load_prompt_set; "
            "[load_prompt_set(s) for s in ('masterpieces', 'artistic', 'imagenet-100')]; "
            "print('open_clip' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
