"""ExportConfig: the knobs of one export."""

from __future__ import annotations

from dataclasses import dataclass

from foclip.errors import InputError, did_you_mean
from foclip.prompts import load_prompt_set
from foclip.rerun import weights_desc
from foclip.scoring import DEFAULT_SCALE

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how.

    Attributes:
        model_name: open_clip model name (``ViT-B-32``, ``foclip-tiny``...).
        pretrained: open_clip tag, checkpoint file, or ``random`` (seeded init, offline).
        prompts: prompt sets to embed as text banks (``artistic``, ``imagenet-N``, or files).
        precisions: image-encoder precisions; fp32 is always written (it is the source and the
            reference); text encoders are written in fp32 and, when asked, fp16 (no int8 text).
        opset: ONNX opset (17 or more; at most what the installed exporter produces).
        seed: seed of the random init, the imagenet-N draw and the random parity prompts.
        detect_graph: also write the fused detection graph ``detect.fp32.onnx`` (and ``detect.fp16.onnx``
            when fp16 is exported: TensorRT fp16 engines are built from it) (off by default:
            it holds a second copy of the image encoder's weights, and on the CPU it gains little;
            see docs/export.md).
        int8_method: how the int8 image encoder is made (a key of
            :data:`foclip.exporter.convert.INT8_METHODS`; the default holds on every CPU).
        int8_optimize: run ONNX Runtime's transformer optimizer before int8 quantisation.
        score_scale: w of the CLIPscore used by parity and the detection graph.
    """

    model_name: str = "ViT-B-32"
    pretrained: str = "random"
    prompts: tuple[str, ...] = ("artistic",)
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    opset: int = 18
    seed: int = 0
    detect_graph: bool = False
    int8_method: str = "dynamic-u8s7"
    int8_optimize: bool = False
    score_scale: float = DEFAULT_SCALE

    def __post_init__(self) -> None:
        # A lone string would otherwise be iterated character by character.
        for name in ("prompts", "precisions"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))

    def resolved_precisions(self) -> tuple[str, ...]:
        """Requested precisions in canonical order, fp32 included.

        Raises:
            InputError: an unknown precision.
        """
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise InputError(f"precision {bad[0]!r}", "is not an export precision" + did_you_mean(bad[0], PRECISIONS),
                             f"some of {', '.join(PRECISIONS)}")
        return tuple(p for p in PRECISIONS if p == "fp32" or p in self.precisions)

    def settings(self) -> dict:
        """The settings that define the bundle (kept in ``manifest.info["settings"]``; a rerun compares them).

        Returns:
            A JSON-ready dict; prompt files are named with the first 8 hex of their prompts' sha256.

        Raises:
            InputError: an unknown precision or prompt set.
        """

        prompts = []
        for spec in self.prompts:
            ps = load_prompt_set(spec, seed=self.seed)
            prompts.append(f"{ps.name}@{ps.sha256[:8]}" if ps.name.startswith("file:") else ps.name)
        return {"model": self.model_name, "pretrained": weights_desc(self.pretrained, self.seed),
                "prompts": prompts, "precisions": list(self.resolved_precisions()), "opset": self.opset,
                "seed": self.seed, "detect_graph": self.detect_graph, "int8_method": self.int8_method,
                "int8_optimize": self.int8_optimize, "score_scale": self.score_scale}
