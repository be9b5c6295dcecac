"""Side-by-side figures of torch.onnx's two exporters on foclip's encoders (for docs/export.md).

    python scripts/measure/compare_exporters.py --model ViT-B-32

For each exporter (TorchScript ``dynamo=False``; ``dynamo=True``) and encoder: export seconds,
whether the export succeeded, node count, file size, ONNX Runtime session-creation seconds, and
min cosine vs PyTorch at batch 1, 3 and 16 (the graph is exported at batch 2 with a dynamic axis).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np


def _export(module, example, path: Path, in_name: str, opset: int, dynamo: bool, out_name: str = "embedding") -> None:
    import torch

    kwargs: dict[str, Any] = {"input_names": [in_name], "output_names": [out_name], "opset_version": opset}
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=1024)
        kwargs["dynamic_shapes"] = ({0: batch},)
        kwargs["external_data"] = False
    else:
        kwargs["dynamic_axes"] = {in_name: {0: "batch"}, out_name: {0: "batch"}}
    torch.backends.mha.set_fastpath_enabled(False)
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=dynamo, **kwargs)


def compare(model_name: str, opset: int = 18) -> dict[str, Any]:
    """Export both encoders with both exporters and measure.

    Args:
        model_name: open_clip model name.
        opset: opset for both exporters.

    Returns:
        Nested dict of figures.
    """
    import onnx
    import torch

    from foclip.exporter.parity import cosine_rows, ort_session, random_token_rows
    from foclip.models import ImageEncoder, TextEncoder, load_clip

    torch.set_grad_enabled(False)
    c = load_clip(model_name, "random", seed=0)
    size, ctx = c.preprocess.image_size, c.context_length
    cases = {
        "image": (ImageEncoder(c.model, c.preprocess).eval(), "pixels",
                  torch.rand(2, 3, size, size), np.random.default_rng(0).random((16, 3, size, size), np.float32)),
        "text": (TextEncoder(c.model).eval(), "tokens", torch.from_numpy(random_token_rows(2, ctx, 49406, 49407, 1)),
                 random_token_rows(16, ctx, 49406, 49407, 0)),
    }
    out: dict[str, Any] = {"model": model_name, "opset": opset, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        for dynamo in (False, True):
            name = "dynamo" if dynamo else "torchscript"
            for enc, (module, in_name, example, x) in cases.items():
                path = Path(tmp) / f"{name}.{enc}.onnx"
                rec: dict[str, Any] = {}
                t = time.perf_counter()
                try:
                    _export(module, example, path, in_name, opset, dynamo)
                except Exception as exc:  # noqa: BLE001 - whether it works is the figure
                    rec.update(ok=False, error=f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}")
                    out[f"{name}.{enc}"] = rec
                    continue
                rec["export_s"] = round(time.perf_counter() - t, 2)
                m = onnx.load(str(path))
                rec.update(ok=True, nodes=len(m.graph.node), mb=round(path.stat().st_size / 1e6, 1),
                           opset=max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")))
                t = time.perf_counter()
                try:
                    sess = ort_session(path, "fp32")
                except Exception as exc:  # noqa: BLE001 - whether it loads is the figure
                    # dynamo names the aten.embedding value "embedding": renaming the output to it collides
                    rec.update(ok=False, error=f"ORT load: {str(exc).splitlines()[0][-120:]}")
                    _export(module, example, path, in_name, opset, dynamo, out_name="output")
                    rec["figures_below_with_output_renamed"] = "output"
                    sess = ort_session(path, "fp32")
                rec["ort_session_s"] = round(time.perf_counter() - t, 2)
                ref = module(torch.from_numpy(x)).numpy()
                for b in (1, 3, 16):
                    try:
                        got = sess.run(None, {in_name: x[:b]})[0]
                        rec[f"min_cos_b{b}"] = float(cosine_rows(ref[:b], got).min())
                    except Exception as exc:  # noqa: BLE001 - whether it runs is the figure
                        rec[f"min_cos_b{b}"] = f"failed: {exc.__class__.__name__}"
                t = time.perf_counter()
                for _ in range(3):
                    sess.run(None, {in_name: x})
                rec["ort_b16_s"] = round((time.perf_counter() - t) / 3, 3)
                out[f"{name}.{enc}"] = rec
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--opset", type=int, default=18)
    args = ap.parse_args()
    print(json.dumps(compare(args.model, args.opset), indent=1))


if __name__ == "__main__":
    main()
