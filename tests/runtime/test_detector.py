"""Detector: same scores as PyTorch, one 2N call, cascade, fused graph, bad items, streaming, prompts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from foclip.errors import BundleError, InputError
from foclip.runtime import DEFAULT_TAU_DROP, Calibration, Detector
from foclip.runtime.decode import DecodeLimits, decode_item
from foclip.scoring import clipscore, drop, to_gray


@pytest.fixture(scope="module")
def det(tiny_bundle):
    d = Detector.from_bundle(tiny_bundle, batch_size=8, threads=1)
    yield d
    d.close()


@pytest.fixture(scope="module")
def photos(sample_photos):
    """Eight real photos: the samples and their flips."""
    arrs = list(sample_photos.values())
    return arrs + [a[:, ::-1].copy() for a in arrs]


def test_scores_match_pytorch(tiny_bundle, det, photos):
    import torch

    from foclip.models import ImageEncoder, load_clip

    clip = load_clip("foclip-tiny", "random", seed=0)
    enc = ImageEncoder(clip.model, clip.preprocess).eval()
    u8 = np.stack([decode_item(a, "x", det.spec, DecodeLimits()) for a in photos])
    x = u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    with torch.no_grad():
        ec = enc(torch.from_numpy(x)).numpy()
        eg = enc(torch.from_numpy(to_gray(x, channel_axis=1))).numpy()
    bank = det.text_bank.embeddings
    want_c, want_g = clipscore(ec, bank), clipscore(eg, bank)
    results = det.detect(photos)
    got_c = np.array([r.score_color for r in results])
    got_g = np.array([r.score_gray for r in results])
    np.testing.assert_allclose(got_c, want_c, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([r.drop for r in results], drop(got_c, got_g), rtol=1e-9)
    for r in results:
        assert r.tampered == (r.score_color >= det.config.tau_score and r.drop >= DEFAULT_TAU_DROP)
        assert r.calibrated is False


def test_one_encoder_call_on_2n(det, photos):
    det.backend.reset_timing()
    det.detect(photos[:5])
    assert det.backend.calls == 1 and det.backend.rows == 10


def test_to_dict_fields(det, photos):
    d = det.detect(photos[:1], ids=["photo-1"])[0].to_dict()
    assert {"id", "score_color", "score_gray", "drop", "tampered", "error"} <= set(d)
    assert d["id"] == "photo-1" and d["error"] is None and d["score_scale"] == 100.0
    with pytest.raises(InputError):
        det.detect(photos[:2], ids=["only-one"])


def test_cascade_gives_identical_decisions(tiny_bundle, det, photos):
    plain = det.detect(photos)
    scores = sorted(r.score_color for r in plain)
    tau_score, tau_drop = scores[len(scores) // 2], float(np.median([r.drop for r in plain]))
    full = Detector.from_bundle(tiny_bundle, batch_size=8, threads=1, tau_score=tau_score, tau_drop=tau_drop)
    casc = Detector.from_bundle(tiny_bundle, batch_size=8, threads=1, tau_score=tau_score, tau_drop=tau_drop,
                                cascade=True)
    a, b = full.detect(photos), casc.detect(photos)
    assert [r.tampered for r in a] == [r.tampered for r in b]
    assert any(r.tampered for r in a) and not all(r.tampered for r in a)
    gated = sum(r.score_color >= tau_score for r in a)
    assert casc.stats["gray_rows"] == gated < len(photos)
    for ra, rb in zip(a, b):
        assert rb.score_color == pytest.approx(ra.score_color, rel=1e-5, abs=1e-7)
        if rb.score_color < tau_score:
            assert rb.score_gray is None and rb.drop is None and rb.tampered is False


def test_fused_graph_matches_encoder_path(tiny_bundle, det, photos):
    fused = Detector.from_bundle(tiny_bundle, graph="fused", batch_size=8, threads=1)
    assert fused.info()["graph"] == "fused"
    for a, b in zip(det.detect(photos), fused.detect(photos)):
        assert b.score_color == pytest.approx(a.score_color, rel=1e-4, abs=1e-6)
        assert b.score_gray == pytest.approx(a.score_gray, rel=1e-4, abs=1e-6)


def test_int8_within_its_gate_and_deciding_like_fp32(tiny_bundle, det, photos):
    """What matters about int8, on any CPU: its embeddings of real photos (colour and gray rows)
    stay within the int8 gate of fp32, and with the same thresholds it decides the same way."""
    from foclip.exporter.parity import cosine_rows
    from foclip.runtime.backends import create_runner
    from foclip.runtime.preprocess import to_pixels
    from foclip.scoring import to_gray

    b = det.bundle
    color = np.stack([to_pixels(Image.fromarray(a), b.manifest.preprocess) for a in photos])
    x = np.concatenate([color, to_gray(color, channel_axis=1)]).astype(np.float32)
    with create_runner("ort-cpu", b, "image.fp32", threads=1) as f, create_runner("ort-cpu", b, "image.int8",
                                                                                 threads=1) as q:
        cos = cosine_rows(f.run({"pixels": x})["embedding"], q.run({"pixels": x})["embedding"])
    assert cos.min() >= b.manifest.graphs["image.int8"].gate_min_cosine
    ref = det.detect(photos)
    tau_score = float(np.median([r.score_color for r in ref]))
    tau_drop = float(np.median([r.drop for r in ref]))
    kw = {"tau_score": tau_score, "tau_drop": tau_drop, "batch_size": 8, "threads": 1}
    with Detector.from_bundle(tiny_bundle, **kw) as f32, Detector.from_bundle(tiny_bundle, precision="int8", **kw) as i8:
        a, c = f32.detect(photos), i8.detect(photos)
        assert i8.self_check.passed and i8.self_check.min_cosine >= 0.99
    margin = [abs(r.drop - tau_drop) for r in a]
    agree = [x.tampered == y.tampered for x, y, m in zip(a, c, margin) if m > 0.02]  # far from the threshold
    assert agree and all(agree)


def test_missing_precision(tiny_bundle):
    with pytest.raises(InputError, match="precision 'bf16'.*fp32, fp16 or int8"):
        Detector.from_bundle(tiny_bundle, precision="bf16")
    import dataclasses

    from foclip.runtime import choose_graph, open_bundle

    b = open_bundle(tiny_bundle)
    no_int8 = dataclasses.replace(b, manifest=b.manifest.with_changes(
        graphs={k: g for k, g in b.manifest.graphs.items() if k != "image.int8"}))
    with pytest.raises(BundleError, match="has no image.int8 graph .* --precision int8"):
        choose_graph(no_int8, "ort-cpu", "int8")


def test_bad_items_do_not_disturb_batch(det, photos, bad_corpus, corpus_codes):
    clean = det.detect(photos[:4])
    names = sorted(corpus_codes)
    items = [str(bad_corpus / n) for n in names]
    mixed = items[:5] + photos[:2] + items[5:] + photos[2:4]
    results = det.detect(mixed)
    assert len(results) == len(mixed)
    by_id = {r.id: r for r in results}
    for n in names:
        r = by_id[str(bad_corpus / n)]
        if corpus_codes[n] is None:
            assert r.ok and r.score_color is not None, n
        else:
            assert r.error["code"] == corpus_codes[n] and r.tampered is None and r.score_color is None, n
    good = [r for r in results if r.id.startswith("item-")]
    assert len(good) == 4
    for g, c in zip(good, clean):
        assert g.score_color == pytest.approx(c.score_color, rel=1e-5, abs=1e-7)
        assert g.score_gray == pytest.approx(c.score_gray, rel=1e-5, abs=1e-7)


def test_detect_iter_streams_with_bounded_lookahead(det, photos):
    pulled = 0

    def endless():
        nonlocal pulled
        for a in itertools.cycle(photos):
            pulled += 1
            yield a

    stream = det.detect_iter(endless(), batch_size=4)
    first = [next(stream) for _ in range(5)]
    assert all(r.ok for r in first)
    assert pulled <= 3 * 4  # current batch, the one decoding ahead, and the next one just started
    stream.close()


def test_custom_prompts_embedded_like_open_clip(tiny_bundle):
    import torch

    from foclip.models import TextEncoder, load_clip

    prompts = ["a photo of a cat", "Ünïcode façade 🎨", "an astronaut on the moon"]
    d = Detector.from_bundle(tiny_bundle, prompts=prompts, threads=1)
    assert d.text_bank.name == "custom" and d.text_bank.prompts == tuple(prompts)
    clip = load_clip("foclip-tiny", "random", seed=0)
    with torch.no_grad():
        want = TextEncoder(clip.model)(clip.tokenizer(prompts)).numpy()
    cos = (d.text_bank.embeddings * want).sum(axis=1)
    assert cos.min() > 0.99999


def test_prompts_bank_file_and_unknown(tiny_bundle, tmp_path):
    d = Detector.from_bundle(tiny_bundle, prompts="artistic", threads=1)
    assert d.text_bank.name == "artistic"
    f = tmp_path / "p.txt"
    f.write_text("a red car\n# comment\na blue boat\n", encoding="utf-8")
    d2 = Detector.from_bundle(tiny_bundle, prompts=str(f), threads=1)
    assert d2.text_bank.prompts == ("a red car", "a blue boat")
    with pytest.raises(BundleError, match="artistic"):
        Detector.from_bundle(tiny_bundle, prompts="imagenet-7")


def test_prompt_file_named_like_a_builtin_set_is_read_as_a_file(tiny_bundle, tmp_path, monkeypatch):
    (tmp_path / "imagenet-3").write_text("a red car\na blue boat\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    d = Detector.from_bundle(tiny_bundle, prompts="imagenet-3", threads=1)
    assert d.text_bank.prompts == ("a red car", "a blue boat") and d.text_bank.name == "file:imagenet-3"


def test_calibration_from_another_bundle_is_refused(tiny_bundle, det, tmp_path):
    bank = det.text_bank
    good = Calibration(tau_score=0.1, tau_drop=0.2, mode="fpr", target_fpr=0.05,
                       bundle_hash=det.bundle.bundle_hash, backend="ort-cpu", precision="fp32",
                       score_scale=100.0, text_bank={"name": bank.name, "sha256": bank.sha256, "count": 3})
    good.save(tmp_path / "cal.json")
    d = Detector.from_bundle(tiny_bundle, calibration=tmp_path / "cal.json", threads=1)
    assert d.calibrated and d.config.tau_drop == 0.2 and d.info()["calibration"]["tau_score"] == 0.1
    assert d.detect([np.full((32, 32, 3), 128, np.uint8)])[0].calibrated is True
    other = Calibration(**{**good.to_dict(), "bundle_hash": "f" * 64})
    with pytest.raises(BundleError, match="was made with bundle ffffffffffff"):
        Detector.from_bundle(tiny_bundle, calibration=other)
    with pytest.raises(BundleError, match="prompts"):
        Detector.from_bundle(tiny_bundle, calibration=good, prompts=["something else"])


def test_info_is_json_ready(det):
    import json

    info = json.loads(json.dumps(det.info()))
    assert info["backend"] == "ort-cpu" and info["precision"] == "fp32" and info["score_scale"] == 100.0
    assert info["calibrated"] is False and info["random_init"] is True


def test_unknown_option(tiny_bundle):
    with pytest.raises(InputError, match="unknown"):
        Detector.from_bundle(tiny_bundle, colour="yes")


def test_probes_ride_in_the_same_encoder_call(tiny_bundle, det, photos):
    """Multi-probe: N colour rows + N rows per probe in one call; gray scores equal the default path;
    the decision statistic is the largest relative drop over the probes."""
    probes = ("gray", "hue180", "swap-rb")
    with Detector.from_bundle(tiny_bundle, batch_size=8, threads=1, probes=probes, tau_drop=0.0) as multi:
        multi.backend.reset_timing()
        got = multi.detect(photos)
        assert multi.backend.calls == 1 and multi.backend.rows == len(photos) * (1 + len(probes))
        assert multi.info()["probes"] == list(probes) and multi.info()["graph_key"] == "image.fp32"
    ref = det.detect(photos)
    for g, r in zip(got, ref):
        assert set(g.probe_scores) == set(probes)
        assert abs(g.score_gray - r.score_gray) < 1e-4 and abs(g.drop - r.drop) < 1e-6
        drops = [drop(g.score_color, g.probe_scores[p]) for p in probes]
        assert g.probe_drop == pytest.approx(max(drops)) and g.statistic == g.probe_drop
        assert g.to_dict()["probe_drop"] == g.probe_drop
    assert ref[0].probe_scores is None and "probe_drop" not in ref[0].to_dict()


def test_probes_with_cascade_decide_the_same(tiny_bundle, photos):
    kw = {"batch_size": 8, "threads": 1, "probes": ("gray", "desat50", "hue90")}
    with Detector.from_bundle(tiny_bundle, **kw) as full:
        scores = sorted(r.score_color for r in full.detect(photos))
        k = len(scores) // 2  # between two scores: no image sits on the gate
        tau = {"tau_score": (scores[k - 1] + scores[k]) / 2, "tau_drop": 0.0}
    with Detector.from_bundle(tiny_bundle, **kw, **tau) as full, \
            Detector.from_bundle(tiny_bundle, cascade=True, **kw, **tau) as casc:
        a, b = full.detect(photos), casc.detect(photos)
    assert [x.tampered for x in a] == [y.tampered for y in b]
    assert any(y.probe_drop is None for y in b) and any(y.probe_drop is not None for y in b)


def test_unknown_probe_is_one_line(tiny_bundle):
    with pytest.raises(InputError, match="probes .* Expected distinct names"):
        Detector.from_bundle(tiny_bundle, probes=("gray", "sepia"))


def test_probe_definitions():
    from foclip.scoring import LUMA, PROBES, apply_probe

    x = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32) * 0.5 + 0.25
    assert np.array_equal(apply_probe(x, "gray", 1), to_gray(x, 1))
    for name in ("desat50", "hue90", "hue180", "hue270"):
        y = apply_probe(x, name, 1)
        assert y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1
        assert np.allclose(np.asarray(LUMA) @ PROBES[name], LUMA, atol=1e-6), name  # the map keeps luma (before clip)
        assert not np.allclose(y, x, atol=1e-3), name
    assert np.array_equal(apply_probe(x, "swap-rb", 1), x[:, ::-1])
    assert set(PROBES) == {"gray", "desat50", "hue90", "hue180", "hue270", "swap-rb"}


def test_decoding_in_the_calling_thread_gives_the_same_results(tiny_bundle, det, photos, bad_corpus):
    items = photos[:3] + [str(p) for p in sorted(bad_corpus.iterdir())[:3]]
    with Detector.from_bundle(tiny_bundle, batch_size=8, threads=1, decode_workers=0) as inline:
        got = inline.detect(items)
        assert inline._pool is None  # no decode threads were started
    want = det.detect(items)
    assert [g.to_dict() for g in got] == [w.to_dict() for w in want]
