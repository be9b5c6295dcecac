"""scripts/cpu_matrix.py: the pure logic (kernels, expectations, verdicts, detect comparison).

The emulated runs themselves need qemu-user and take minutes; `.ci/run` runs the whole matrix after
the test suite (docs/export.md, "int8 on CPUs we do not have").
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cpu_matrix.py"
spec = importlib.util.spec_from_file_location("cpu_matrix", SCRIPT)
cm = importlib.util.module_from_spec(spec)
sys.modules["cpu_matrix"] = cm  # dataclasses look their module up there
spec.loader.exec_module(cm)

NEHALEM = {"sse4_1", "sse4_2"}
HASWELL = NEHALEM | {"avx", "f16c", "fma", "avx2"}
SKYLAKE_SP = HASWELL | {"avx512f", "avx512bw", "avx512dq", "avx512vl"}
CASCADE = SKYLAKE_SP | {"avx512_vnni"}
SPR = CASCADE | {"avx_vnni", "amx_tile", "amx_int8"}


def test_int8_methods_match_the_exporter():
    from foclip.exporter.convert import DEFAULT_INT8_METHOD, INT8_METHODS

    assert set(cm.INT8_METHODS) == set(INT8_METHODS)
    assert cm.DEFAULT_METHOD == DEFAULT_INT8_METHOD
    assert set(cm.VNNI_ONLY) == {m for m, x in INT8_METHODS.items() if "VNNI" in x.cpus and "only" in x.cpus}


@pytest.mark.parametrize(("flags", "family", "sat"), [
    (NEHALEM, "SSE2", False), (HASWELL, "AVX2", True), (SKYLAKE_SP, "AVX512core", True),
    (CASCADE, "AVX512-VNNI", False), (SPR, "AMX", False), (HASWELL | {"avx_vnni"}, "AVX-VNNI", False),
])
def test_u8s8_kernel_follows_mlas_dispatch(flags, family, sat):
    assert cm.u8s8_kernel(flags).startswith(family)
    assert cm.saturates(flags) is sat


def test_kernel_names_per_method():
    assert cm.kernel("fp32", HASWELL) == "SGEMM FMA3"
    assert cm.kernel("fp32", NEHALEM) == "SGEMM SSE"
    assert cm.kernel("fp32", CASCADE) == "SGEMM AVX512F"
    assert cm.kernel("fp16", HASWELL).startswith("SGEMM FMA3")
    assert cm.kernel("dynamic-u8u8", HASWELL) == "QGEMM u8u8 AVX2 (int16, exact)"
    assert cm.kernel("dynamic-u8s7", HASWELL).startswith("QGEMM u8s8 AVX2")
    assert cm.kernel("static-qdq", NEHALEM).startswith("QGEMM u8s8 SSE2")


def test_expectations():
    assert cm.expectation("control", "dynamic-s8", HASWELL) == "refuse"
    assert cm.expectation("control", "dynamic-s8", NEHALEM) == "info"
    assert cm.expectation("control", "dynamic-s8", CASCADE) == "info"
    assert cm.expectation("reference", "dynamic-s8", HASWELL) == "info"   # documented VNNI-only
    assert cm.expectation("reference", "dynamic-s8", CASCADE) == "pass"
    for m in ("fp32", "fp16", "dynamic-u8s7", "dynamic-u8u8", "static-qdq"):
        assert cm.expectation("reference", m, HASWELL) == "pass"
        assert cm.expectation("reference", m, NEHALEM) == "pass"


def _row(**kw):
    base = {"case": "reference", "method": "dynamic-u8s7", "graph": "image.int8", "cpu": "Haswell",
            "min_cosine": 0.9999, "gate": 0.99, "passed": True, "expect": "pass"}
    return cm.Row(**{**base, **kw})


def _control(passed, **kw):
    return _row(case="control", method="dynamic-s8", expect="refuse", passed=passed,
                min_cosine=0.995 if passed else 0.98, **kw)


def test_verdicts():
    assert cm.verdict(_row()) == (True, "pass")
    assert cm.verdict(_row(passed=False, min_cosine=0.98))[0] is False
    assert cm.verdict(_row(expect="info", passed=False))[0] is True
    assert cm.verdict(_control(False)) == (True, "REFUSED (as expected)")
    assert cm.verdict(_control(True))[0] is False
    assert cm.verdict(_control(None))[0] is False                        # a control that did not run
    assert cm.verdict(_control(None, refused_at_export=True))[0] is True
    assert cm.verdict(_row(passed=None, note="skipped: illegal instruction")) == (True, "skipped")
    assert cm.verdict(_row(passed=None, note="RuntimeError: boom")) == (False, "ERROR")


def test_a_passing_control_fails_the_matrix():
    good = [_row(), _control(False)]
    assert cm.matrix_ok(good, []) == (True, [])
    ok, problems = cm.matrix_ok([_row(), _control(True)], [])
    assert not ok and "saturation not reproduced" in problems[0]
    ok, problems = cm.matrix_ok([_row(), _row(case="control", expect="info")], [])
    assert not ok and "nothing showed" in problems[0]                     # no CPU where the control can fail
    assert cm.matrix_ok([_row()], [], need_control=False) == (True, [])
    ok, problems = cm.matrix_ok([_row(passed=False, min_cosine=0.97), _control(False)], [])
    assert not ok and "below gate" in problems[0]


def test_compare_detect_and_its_verdict():
    native = [{"id": "a.jpg", "score_color": 20.0, "score_gray": 10.0, "drop": 0.5, "tampered": True},
              {"id": "b.jpg", "score_color": 5.0, "score_gray": 5.0, "drop": 0.0, "tampered": False}]
    same = [{**native[0], "score_color": 20.001}, {**native[1], "drop": 0.002}]
    d = cm.compare_detect(native, same)
    assert d["same_decisions"] and d["images"] == 2 and d["flagged"] == 1
    assert d["max_abs_dscore"] == pytest.approx(0.001) and d["max_abs_ddrop"] == pytest.approx(0.002)
    flipped = [native[0], {**native[1], "tampered": True}]
    bad = cm.compare_detect(native, flipped)
    assert not bad["same_decisions"]
    assert not cm.compare_detect(native, native[:1])["same_decisions"]     # an image went missing
    ok, problems = cm.matrix_ok([_control(False)], [{"cpu": "Haswell", **bad}])
    assert not ok and "decisions differ" in problems[0]
    assert cm.matrix_ok([_control(False)], [{"cpu": "Nehalem", "note": "skipped: x"}])[0]


def test_markdown_names_cpu_host_flags_and_kernel():
    rows = [_row(flags=["avx2", "fma"], kernel="QGEMM u8s8 AVX2"), _control(False)]
    md = cm.markdown(rows, [{"cpu": "Haswell", "bundle": "ref", **cm.compare_detect([], [])}], ["avx2", "avx512_vnni"])
    line = md.splitlines()[2]
    assert "emulated Haswell" in line and "avx2 avx512_vnni" in line and "QGEMM u8s8 AVX2" in line
    assert "0.999900" in line and "REFUSED" in md.splitlines()[3]
    assert "same decisions" in md
