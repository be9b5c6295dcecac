"""One pixel pipeline: the same uint8 batch reaches every image encoder bit-identically (issue 26).

The callers: the export's parity report (PyTorch reference and the ONNX Runtime runner), the
bundle's self-check reference set, the self-check at load, the detector (one 2N call and cascade)
and the benchmark's encoder-only row. The expected input is written out here from the definition
(uint8 -> /255 -> NCHW, colour rows then their luma-gray copies), not taken from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from foclip.scoring import to_gray

N = 4


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    from foclip.models import load_clip

    size = load_clip("foclip-tiny", "random", seed=0).preprocess.image_size
    return np.random.default_rng(7).integers(0, 256, (N, size, size, 3), dtype=np.uint8)


def _expected(u8: np.ndarray) -> np.ndarray:
    x = u8.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return np.concatenate([x, to_gray(x, channel_axis=1)])


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


@pytest.fixture(scope="module")
def recorded(batch, tmp_path_factory):
    """Export a bundle whose photos are ``batch`` and record every image-encoder input on the way."""
    import torch

    import foclip.samples
    from foclip.exporter import ExportConfig, export_bundle, parity
    from foclip.models import ImageEncoder

    mp = pytest.MonkeyPatch()
    seen: dict[str, list[np.ndarray]] = {"torch": [], "ort": []}
    forward, encoder_parity = ImageEncoder.forward, parity.encoder_parity

    def record_forward(self, pixels):
        if not torch.onnx.is_in_onnx_export():  # the export's own trace input is not a parity input
            seen["torch"].append(pixels.detach().numpy().copy())
        return forward(self, pixels)

    def record_parity(runner, name, x, ref, gate):
        if name == "pixels":
            seen["ort"].append(x.copy())
        return encoder_parity(runner, name, x, ref, gate)

    mp.setattr(foclip.samples, "sample_photos",
               lambda limit=None: [(f"x{i}", Image.fromarray(a)) for i, a in enumerate(batch)])
    mp.setattr(ImageEncoder, "forward", record_forward)
    mp.setattr(parity, "encoder_parity", record_parity)
    out = tmp_path_factory.mktemp("pipeline") / "b"
    try:
        export_bundle(ExportConfig(model_name="foclip-tiny", pretrained="random", prompts=("artistic",),
                                   precisions=("fp32",), opset=18, seed=0, detect_graph=False), out)
    finally:
        mp.undo()
    return out, seen


def test_export_parity_and_reference_feed_the_same_pixels(batch, recorded):
    bundle_dir, seen = recorded
    want = _expected(batch)
    # run_parity pads 2N rows to 16 by repeating them; the reference set is the 2N rows themselves
    assert sorted(len(x) for x in seen["torch"]) == [2 * N, 16] and [len(x) for x in seen["ort"]] == [16]
    for got in [x[:2 * N] for x in seen["torch"] + seen["ort"]]:
        assert _same(got, want)
    assert _same(np.load(bundle_dir / "reference" / "pixels_u8.npy"), batch)


class _Recorder:
    """A runner that records its feeds and delegates."""

    def __init__(self, runner, sink):
        self.runner, self.sink = runner, sink
        self.name, self.graph, self.gate_min_cosine = runner.name, runner.graph, runner.gate_min_cosine

    def run(self, feeds):
        self.sink.extend(v.copy() for v in feeds.values())
        return self.runner.run(feeds)


def test_self_check_feeds_the_same_pixels(batch, recorded):
    from foclip.runtime.backends import create_runner
    from foclip.runtime.bundle import open_bundle
    from foclip.runtime.selfcheck import self_check

    bundle = open_bundle(recorded[0])
    sink: list[np.ndarray] = []
    with create_runner("ort-cpu", bundle, "image.fp32", threads=1) as runner:
        result = self_check(bundle, runner.graph, _Recorder(runner, sink))
    assert result.passed and len(sink) == 1 and _same(sink[0], _expected(batch))


@pytest.mark.parametrize("cascade", [False, True])
def test_detector_feeds_the_same_pixels(batch, recorded, monkeypatch, cascade):
    from foclip.runtime import Detector

    sink: list[np.ndarray] = []
    encode = Detector._encode
    monkeypatch.setattr(Detector, "_encode", lambda self, px: (sink.append(px.copy()), encode(self, px))[1])
    # tau_score 0 is at or below every score (pairs are clamped at 0): cascade runs the gray pass for all rows
    with Detector.from_bundle(recorded[0], batch_size=N, threads=1, cascade=cascade, tau_score=0.0) as det:
        det.score_probes(batch)
    got = np.concatenate(sink) if cascade else sink[0]
    assert len(sink) == (2 if cascade else 1) and _same(got, _expected(batch))


def test_benchmark_encoder_row_feeds_the_same_pixels(batch, recorded, monkeypatch, tmp_path):
    from foclip.benchmarks.detect import encoder_only_row
    from foclip.runtime import Detector

    paths = []
    for i, a in enumerate(batch):  # PNG is lossless and the photos are already model-sized
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    sink: list[np.ndarray] = []
    encode = Detector._encode
    monkeypatch.setattr(Detector, "_encode", lambda self, px: (sink.append(px.copy()), encode(self, px))[1])
    encoder_only_row("enc", str(recorded[0]), paths, batch_size=N, threads=1)()
    assert len(sink) == 2 and all(_same(x, _expected(batch)) for x in sink)  # warm-up + one pass
