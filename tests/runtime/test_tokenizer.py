"""The bundle tokenizer (tokenizers library, no torch) against open_clip's tokenizer."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from foclip.errors import BundleError, InputError
from foclip.manifest import TokenizerSpec
from foclip.runtime.tokenizer import CONFIG_NAME, load_tokenizer


def _manifest(context_length: int = 77) -> tuple[TokenizerSpec, int]:
    return TokenizerSpec(), context_length


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    import open_clip

    from foclip.exporter.tokenizer_asset import write_tokenizer

    d = tmp_path_factory.mktemp("tok")
    write_tokenizer(d, open_clip.get_tokenizer("ViT-B-32"), 77)
    return d


@pytest.fixture(scope="module")
def ours(tok_dir):
    return load_tokenizer(tok_dir, *_manifest())


@pytest.fixture(scope="module")
def theirs():
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32")


ODD = [
    "", " ", "\t\n\r", "a", "A", "a photo of a cat.", "  lots   of\t\tspace \n and\r\nnewlines  ",
    "café naïve résumé Ångström ÆØÅ œuvre façade jalapeño", "Straße ǅ ǈ İstanbul ΣΊΣΥΦΟΣ ſ", "'S 's 'T 'LL 'ſ",
    "🍕🍕🍕 🏳️‍🌈 👍🏽 family: 👨‍👩‍👧‍👦 ❤️", "日本語のテキスト 中文 한국어 ไทย العربية עברית हिन्दी",
    "&amp; &lt;b&gt; &amp;amp;lt; &#39;quoted&#39; &nbsp;x", "The Mona Lisa â€” mojibake Ã©tÃ©",
    "zero\u200bwidth\u200cjoin\u200d non\u00a0breaking\u2003em\u3000ideographic", "tab\x0bvt\x0cff\x1cfs\x1dgs\x85nel",
    "combining e\u0301 vs é, n\u0303", "numbers 1234567890 3.14159 1e-9 ½ ² ١٢٣ ⅷ",
    "punctuation!!! ??? ... --- ___ *** \"quotes\" 'single' «guillemets» „low“",
    "<start_of_text> a <end_of_text> b", "x<<end_of_text> hi", ".<end_of_text>.", "<END_OF_TEXT>",
    "<|endoftext|> </w> <w>", "https://example.com/path?q=1&r=2#frag user@example.com",
    "C++ C# F# .NET node.js O'Reilly's rock'n'roll", "\u2028line\u2029para", "ℌ𝔢𝔩𝔩𝔬 ＦＵＬＬＷＩＤＴＨ",
    "a" * 300, "word " * 100, "🍕" * 80, "supercalifragilisticexpialidocious " * 10,
]


def _check(ours, theirs, texts):
    a = ours(texts)
    b = theirs(texts).numpy()
    assert a.dtype == np.int64 and a.shape == b.shape
    bad = [texts[i] for i in np.nonzero((a != b).any(1))[0]]
    assert not bad, f"{len(bad)} mismatches, first {bad[:3]!r}"


def test_imagenet_classnames_and_templates(ours, theirs):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    texts = [t(c) for c in IMAGENET_CLASSNAMES for t in OPENAI_IMAGENET_TEMPLATES[::20]]
    texts += list(IMAGENET_CLASSNAMES)
    assert len(texts) >= 4000
    _check(ours, theirs, texts)


def test_prompt_sets(ours, theirs):
    from foclip.prompts import load_prompt_set

    texts = list(load_prompt_set("artistic").prompts) + list(load_prompt_set("imagenet-300").prompts)
    _check(ours, theirs, texts)


def test_unicode_whitespace_special_and_long(ours, theirs):
    _check(ours, theirs, ODD)


def test_random_unicode_strings(ours, theirs):
    rng = np.random.default_rng(0)
    pools = [range(0x20, 0x7F), range(0xA0, 0x250), range(0x370, 0x400), range(0x3040, 0x30FF),
             range(0x4E00, 0x4E80), range(0x1F300, 0x1F650), [0x20, 0x09, 0x0A, 0x3000, 0x200B, 0x26, 0x3B]]
    texts = []
    for _ in range(1500):
        pool = pools[rng.integers(len(pools))]
        mix = pools[-1]
        n = int(rng.integers(1, 60))
        chars = [chr(pool[int(rng.integers(len(pool)))]) if rng.random() < 0.85 else chr(mix[int(rng.integers(len(mix)))])
                 for _ in range(n)]
        texts.append("".join(chars))
    _check(ours, theirs, texts)


def test_truncation_keeps_eot(ours, theirs):
    row = ours(["word " * 200])[0]
    assert row[0] == ours.sot_token_id and row[-1] == ours.eot_token_id and (row != 0).all()
    assert (row == theirs(["word " * 200]).numpy()[0]).all()


def test_single_string_and_shape(ours):
    out = ours("a dog")
    assert out.shape == (1, 77) and out.dtype == np.int64


def test_non_string_item_is_input_error(ours):
    with pytest.raises(InputError, match="prompt #1"):
        ours(["ok", 3])


def test_missing_files_and_wrong_kind(tok_dir, tmp_path):
    with pytest.raises(BundleError, match="is missing"):
        load_tokenizer(tmp_path, *_manifest())
    (tmp_path / "tokenizer.json").write_bytes((tok_dir / "tokenizer.json").read_bytes())
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"kind": "sentencepiece"}))
    with pytest.raises(BundleError, match="sentencepiece"):
        load_tokenizer(tmp_path, *_manifest())
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(BundleError, match="cannot be loaded"):
        load_tokenizer(tmp_path, *_manifest())


def test_loader_imports_neither_torch_nor_open_clip(tok_dir):
    code = (
        "import sys, json\n"
        "from foclip.manifest import TokenizerSpec\n"
        "from foclip.runtime.tokenizer import load_tokenizer\n"
        f"t = load_tokenizer({str(tok_dir)!r}, TokenizerSpec(), 77)\n"
        "t(['a photo of a cat'])\n"
        "print(json.dumps([n for n in ('torch', 'open_clip') if n in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_unsupported_open_clip_tokenizer_is_refused():
    from foclip.errors import ModelError
    from foclip.exporter.tokenizer_asset import check_supported

    with pytest.raises(ModelError, match="SimpleTokenizer"):
        check_supported(object())
