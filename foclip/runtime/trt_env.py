"""The TensorRT and CUDA that a ``trt`` engine needs, checked before anything is built or loaded.

foclip builds strongly typed engines (precision from the graph, no precision builder flag) and is
checked against two real API surfaces: TensorRT 10.13 (type stubs; 10.12 is the first release in
which strong typing is NVIDIA's recommended mode and weak typing deprecated) and TensorRT 11.4
(weak typing removed). So :func:`load_tensorrt` accepts ``10.12 <= TensorRT < 12`` and says in
one line what to install otherwise.

CUDA has three versions that must agree: the CUDA build of TensorRT (the ``tensorrt-cu12`` /
``tensorrt-cu13`` wheel), the major of the CUDA Python bindings (``cuda-bindings`` / ``cuda-python``
12.x or 13.x; 13.x needs a CUDA 13 driver) and the CUDA version the driver supports
(``cudaDriverGetVersion``). :func:`check_cuda` compares them at build and at load.

Every failure here is a :class:`foclip.errors.FoclipError` of one line naming the call, the
version and the command that fixes it.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from foclip.errors import BackendError, FoclipError, MissingExtraError, require

SUPPORTED = ((10, 12), (12, 0))  # [lo, hi): the TensorRT versions foclip's engine code is checked against
TRT_EXTRA = "pip install 'foclip[trt]'"
BINDINGS_PIN = {12: "cuda-bindings>=12.6,<13", 13: "cuda-bindings>=13,<14"}


def tensorrt_available() -> bool:
    """Whether a real ``tensorrt`` module can be imported, without importing it.

    ``tensorrt-stubs`` installs a ``tensorrt/`` folder holding only ``__init__.pyi``: Python then
    finds a namespace package (no origin), which is type stubs, not TensorRT.
    """
    try:
        spec = importlib.util.find_spec("tensorrt")
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


def parse_version(text: str) -> tuple[int, int]:
    """``"10.13.0.35"`` -> ``(10, 13)``; unparseable -> ``(0, 0)``."""
    m = re.match(r"(\d+)\.(\d+)", str(text))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def load_tensorrt() -> Any:
    """Import TensorRT and check its version.

    Returns:
        The ``tensorrt`` module.

    Raises:
        MissingExtraError: tensorrt is not installed, or only its type stubs are.
        BackendError: a TensorRT outside ``10.12 <= version < 12``.
    """
    if not tensorrt_available():
        raise MissingExtraError("tensorrt", "trt")
    trt = require("tensorrt", "trt")
    version = getattr(trt, "__version__", None)
    if version is None:
        raise MissingExtraError("tensorrt", "trt")
    lo, hi = SUPPORTED
    if not lo <= parse_version(version) < hi:
        raise BackendError(f"TensorRT {version}", "is outside the versions foclip builds strongly typed engines "
                           f"with ({lo[0]}.{lo[1]} <= TensorRT < {hi[0]})",
                           f"`{TRT_EXTRA}` (tensorrt>=10.12,<12)")
    return trt


def cudart() -> Any:
    """The CUDA runtime API of cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6).

    Raises:
        MissingExtraError: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6

        return runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # older cuda-python

            return runtime
        except ImportError as exc:
            raise MissingExtraError("cuda-python", "trt") from exc


def cuda_check(result: Any, call: str = "CUDA call") -> Any:
    """Unpack a cuda-python ``(error, value...)`` tuple; raise on a non-zero error.

    Raises:
        BackendError: naming the call and the CUDA error.
    """
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        hint = " (the driver is older than this CUDA binding)" if int(err) in (35, 36) else ""
        raise BackendError(f"trt {call}", f"failed with CUDA error {err}{hint}",
                           "a working CUDA device (`nvidia-smi` lists it)")
    return rest[0] if len(rest) == 1 else rest


def device_compute_capability(device: int = 0) -> str:
    """Compute capability (``"major.minor"``) of a CUDA device, through cuda-python's runtime API.

    Raises:
        MissingExtraError: cuda-python is not installed.
        BackendError: no device, or the CUDA call fails.
    """
    cu = cudart()
    attr = cu.cudaDeviceAttr
    major = cuda_check(cu.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device),
                       "cudaDeviceGetAttribute(ComputeCapabilityMajor)")
    minor = cuda_check(cu.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device),
                       "cudaDeviceGetAttribute(ComputeCapabilityMinor)")
    return f"{int(major)}.{int(minor)}"


def installed_cuda_builds() -> dict[str, tuple[str, int]]:
    """The CUDA major each installed package is built for, from the installed distributions.

    Returns:
        ``{"tensorrt": (dist name, major), "bindings": (dist version, major)}``; a key is missing when
        that package is not installed as a wheel (a TensorRT from a tarball has no ``tensorrt-cuNN``).
    """
    from importlib import metadata

    found: dict[str, tuple[str, int]] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        m = re.fullmatch(r"tensorrt-cu(\d+)(-bindings)?", name)
        if m and "tensorrt" not in found:
            found["tensorrt"] = (name, int(m.group(1)))
        if name in ("cuda-bindings", "cuda-python") and ("bindings" not in found or name == "cuda-bindings"):
            found["bindings"] = (f"{name} {dist.version}", parse_version(dist.version)[0])
    return found


@dataclass(frozen=True)
class CudaVersions:
    """What :func:`check_cuda` found: the driver's CUDA and the majors the packages are built for."""

    driver: tuple[int, int]
    tensorrt_cuda: int | None
    bindings: str | None
    bindings_cuda: int | None

    def describe(self) -> str:
        """One short line for logs and ``describe()``."""
        return (f"driver CUDA {self.driver[0]}.{self.driver[1]}, TensorRT for CUDA {self.tensorrt_cuda or '?'}, "
                f"{self.bindings or 'cuda bindings ?'}")


def check_cuda(trt_version: str) -> CudaVersions:
    """Compare the driver's CUDA version with what TensorRT and the CUDA bindings are built for.

    Args:
        trt_version: ``tensorrt.__version__`` (for the message).

    Returns:
        The versions found.

    Raises:
        MissingExtraError: cuda-python is not installed.
        BackendError: no driver; bindings built for another CUDA major than TensorRT; a driver
            older than the CUDA major the packages need. The message names the fixing command.
    """
    cu = cudart()
    version = int(cuda_check(cu.cudaDriverGetVersion(), "cudaDriverGetVersion"))
    driver = (version // 1000, (version % 1000) // 10)
    builds = installed_cuda_builds()
    trt_cuda = builds.get("tensorrt", ("", None))[1]
    bindings, bind_cuda = builds.get("bindings", (None, None))
    found = CudaVersions(driver, trt_cuda, bindings, bind_cuda)
    if version == 0:
        raise BackendError("cudaDriverGetVersion", "reports no NVIDIA driver",
                           "a machine with an NVIDIA GPU and its driver (`nvidia-smi` works)")
    if trt_cuda is not None and bind_cuda is not None and trt_cuda != bind_cuda:
        raise BackendError(f"{bindings}", f"is built for CUDA {bind_cuda}, TensorRT {trt_version} for CUDA {trt_cuda}",
                           f"`pip install '{BINDINGS_PIN.get(trt_cuda, f'cuda-bindings=={trt_cuda}.*')}'` "
                           f"(the CUDA major of tensorrt-cu{trt_cuda})")
    need = max((v for v in (trt_cuda, bind_cuda) if v is not None), default=None)
    if need is not None and driver[0] < need:
        who = bindings if bind_cuda == need else f"TensorRT {trt_version} (tensorrt-cu{need})"
        older = BINDINGS_PIN.get(driver[0])
        fix = (f"a driver for CUDA {need} or newer, or packages for CUDA {driver[0]}: "
               f"`pip install 'tensorrt-cu{driver[0]}>=10.12,<12' '{older}'`" if older else
               f"a driver for CUDA {need} or newer")
        raise BackendError(f"CUDA driver {driver[0]}.{driver[1]}", f"is older than CUDA {need}, which {who} needs",
                           fix)
    return found


def np_dtype(trt: Any, dtype: Any, tensor: str) -> np.dtype:
    """The numpy dtype of a TensorRT tensor type (``trt.nptype``: FLOAT, HALF, INT8, INT32, INT64,
    BOOL, UINT8).

    Raises:
        BackendError: a type numpy has no dtype for (BF16, FP8, INT4, FP4), naming the tensor.
    """
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError:
        raise BackendError(f"trt tensor {tensor!r}", f"has TensorRT type {dtype}, which numpy cannot hold",
                           "an engine built by `foclip build-engine` (float32/float16/int/bool/uint8 IO)") from None


@contextmanager
def trt_call(call: str, fix: str) -> Iterator[None]:
    """Turn an exception raised inside a TensorRT or CUDA call into one line naming the call.

    TensorRT's Python bindings raise ``RuntimeError``/``TypeError``/``ValueError`` (a CUDA
    initialisation failure, a bad argument) where the C++ API returns an error code; a FoclipError
    raised inside passes through unchanged.

    Args:
        call: the call, as the message should name it (``Builder(logger)``).
        fix: what to do about it.

    Raises:
        BackendError: for any other exception.
    """
    try:
        yield
    except FoclipError:
        raise
    except Exception as exc:  # a native library's error, reported in one line
        text = " ".join(str(exc).split())[:300]
        raise BackendError(f"TensorRT {call}", f"failed ({exc.__class__.__name__}: {text})", fix) from exc


__all__ = ["SUPPORTED", "CudaVersions", "check_cuda", "cuda_check", "cudart", "device_compute_capability",
           "installed_cuda_builds", "load_tensorrt", "np_dtype", "parse_version", "tensorrt_available", "trt_call"]
