"""Readable output (issue 25): 80-column tables, "did you mean" for flag names and values, plots that
say what they show."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from foclip.cli.main import main


def test_inspect_verify_is_readable_at_80_columns(tiny_bundle, monkeypatch):
    from foclip.cli import common

    buf = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=buf, width=80, color_system=None))
    assert main(["inspect", str(tiny_bundle), "--verify"]) == 0
    text = buf.getvalue()
    # nothing cut (the rows once read `image_enc…`); the one "…" is the text bank's shortened sha256
    cut = [line for line in text.splitlines() if "…" in line]
    assert all(len(line.split("…")[0].split()[-1]) == 16 for line in cut), cut
    assert max(len(line) for line in text.splitlines()) <= 80
    for key in ("image.fp32", "image.fp16", "image.int8", "text.fp32", "detect.fp32"):
        # in the parity table (or, for the fused graph, the per-bank table) and in the self-check table
        assert text.count(f"│ {key} ") >= 2, key


@pytest.mark.parametrize(("argv", "hint"), [
    (["generate", "x.png", "--output", "adv2/"], "did you mean --out adv2/?"),  # --output is a real flag here
    (["export", "--output", "b/", "--model", "foclip-tiny"], "did you mean --out (for --output)?"),
    (["detect", "b", "x.png", "--graph", "fuse"], "did you mean 'fused'?"),
])
def test_mistyped_flag_names_get_did_you_mean(argv, hint, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and hint in " ".join(capsys.readouterr().err.split())


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return " ".join(err.split())


@pytest.mark.parametrize(("extra", "hint"), [
    (["--precision", "fp61"], "(did you mean 'fp16'?)"),
    (["--backend", "ort-cpy"], "(did you mean 'ort-cpu'"),
    (["--probes", "grey"], "(did you mean 'gray'?)"),
    (["--prompts", "artstic"], "(did you mean 'artistic'?)"),
])
def test_mistyped_detect_values_get_did_you_mean(extra, hint, tiny_bundle, sample_photo_dir, capsys):
    assert main(["detect", str(tiny_bundle), str(sample_photo_dir), "--no-self-check", *extra]) == 1
    assert hint in _error_line(capsys)


@pytest.mark.parametrize(("extra", "hint"), [
    (["--precision", "fp32,fp61"], "(did you mean 'fp16'?)"),
    (["--int8-method", "dynamic-u8s8"], "(did you mean 'dynamic-u8u8' or 'dynamic-u8s7'?)"),
    (["--prompts", "clipar"], "(did you mean 'clipart'?)"),
    (["--prompts", "imagnet-50"], "(did you mean 'imagenet-50'?)"),
])
def test_mistyped_export_values_get_did_you_mean(extra, hint, tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "b"), "--model", "foclip-tiny", "--pretrained", "random",
                 *extra]) == 1
    assert hint in _error_line(capsys)


@pytest.mark.parametrize(("extra", "hint"), [
    (["--device", "cda"], "(did you mean 'cuda'?)"),
    (["--adaptive", "grey"], "(did you mean 'gray'?)"),
    (["--prompts", "masterpeices"], "(did you mean 'masterpieces'?)"),
])
def test_mistyped_generate_values_get_did_you_mean(extra, hint, tmp_path, sample_photo_dir, capsys):
    assert main(["generate", str(sample_photo_dir), "--out", str(tmp_path / "g"), "--model", "foclip-tiny",
                 "--pretrained", "random", "--iters", "1", *extra]) == 1
    assert hint in _error_line(capsys)


def test_mistyped_pretrained_and_sections_get_did_you_mean(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", "--out", str(tmp_path / "b"), "--model", "foclip-tiny", "--pretrained", "randon"]) == 1
    assert "(did you mean 'random'?)" in _error_line(capsys)
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--model", "foclip-tiny", "--pretrained", "random",
                 "--sections", "tabel1"]) == 1
    assert "(did you mean 'table1'" in _error_line(capsys)


@pytest.fixture
def kept_figures(monkeypatch):
    """Figures the plotting code creates, kept open (it closes them after saving) for inspection."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept = []
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    for fig in kept:
        matplotlib.pyplot.figure(fig.number) if fig is not None else None
    matplotlib.pyplot.close("all")


def _lines(ax) -> list[str]:
    return [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def test_plots_without_matplotlib_are_one_line_naming_the_extra(tmp_path, monkeypatch):
    import sys

    import numpy as np

    from foclip.errors import MissingExtraError
    from foclip.runtime import fit_calibration

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails, as when not installed
    from foclip.plots import save_plots  # importing the plots module draws nothing and needs no matplotlib

    so, do, sm, dm = np.array([20.0, 21.0]), np.array([0.1, 0.2]), np.array([22.0, 23.0]), np.array([0.6, 0.7])
    cal = fit_calibration(so, do, sm, dm, bundle_hash="0" * 64, backend="ort-cpu", precision="fp32",
                          score_scale=100.0, text_bank={"name": "t", "sha256": "0" * 64, "count": 1}, folds=0)
    with pytest.raises(MissingExtraError) as err:
        save_plots(tmp_path / "plots", so, do, sm, dm, cal)
    assert "\n" not in str(err.value) and "pip install 'foclip[plots]'" in str(err.value)
    assert not (tmp_path / "plots").exists()  # nothing half-made


def test_calibration_plots_count_in_integers_say_what_and_merge_identical_curves(tmp_path, kept_figures):
    import numpy as np

    from foclip.plots import save_plots
    from foclip.runtime import fit_calibration

    rng = np.random.default_rng(0)
    so, sm = rng.uniform(20, 30, 7), rng.uniform(20, 30, 7)  # few images: fractional ticks appeared here
    do, dm = rng.uniform(0, 0.2, 7), rng.uniform(0.3, 0.8, 7)
    cal = fit_calibration(so, do, sm, dm, bundle_hash="0" * 64, backend="ort-cpu", precision="fp32",
                          score_scale=100.0, text_bank={"name": "artistic", "sha256": "0" * 64, "count": 1},
                          target_fpr=0.0, mode="fpr", folds=0, seed=0)
    save_plots(tmp_path, so, do, sm, dm, cal, label="foclip-ref-vit, weights reference")
    roc, hist_score, hist_drop = (f.axes[0] for f in kept_figures)
    for ax, what in ((hist_score, "score_color"), (hist_drop, "drop")):
        title = ax.get_title()
        assert title.startswith(f"{what} of originals and manipulated") and "foclip-ref-vit, weights reference" in title
        assert all(float(t).is_integer() for t in ax.get_yticks())
    assert "ROC" in roc.get_title() and "7 manipulated vs 7 originals" in roc.get_title()
    if cal.tau_score <= min(so.min(), sm.min()):  # the gate passes everything: the two curves coincide
        assert any("(identical curves)" in label for label in _lines(roc))


def test_roc_curves_that_coincide_are_drawn_once_with_joined_labels(kept_figures):
    import matplotlib.pyplot as plt
    import numpy as np

    from foclip.plots import plot_roc_curves

    fig, ax = plt.subplots()
    perfect = (np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0]))
    drawn = plot_roc_curves(ax, [("masterpieces", *perfect), ("artistic", *perfect), ("all sets", *perfect),
                                 ("imagenet-25", np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0]))],
                            bold="all sets")
    assert drawn == 2
    assert _lines(ax) == ["masterpieces = artistic = all sets (identical curves)", "imagenet-25"]
    plt.close(fig)


def test_adaptive_figure_labels_every_bar_even_a_zero_auc(tmp_path, kept_figures):
    from foclip.plots import pyplot
    from foclip_train.sections.adaptive import adaptive_figure as _adaptive_figure

    res = {"prompt_set": "clipart", "images": 4, "rows": [
        {"detector": "gray", "attack": "plain", "auc_drop": 1.0},
        {"detector": "gray", "attack": "adaptive-gray", "auc_drop": 0.0},
        {"detector": "multi-probe", "attack": "plain", "auc_drop": 0.75}]}
    _adaptive_figure(pyplot(), tmp_path, res, "foclip-ref-vit / reference")
    ax = kept_figures[-1].axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert "0.00" in labels and "1.00" in labels and "0.75" in labels  # a zero AUC is labelled, not blank
    assert "ROC-AUC of each detector" in ax.get_title() and "foclip-ref-vit / reference" in ax.get_title()


def test_floor_rule():
    from foclip.scoring import FLOOR_FRACTION, floor_warning

    assert FLOOR_FRACTION == 0.05
    # The measured cases (docs/runtime.md): reference ViT on imagenet-100 vs on its own clipart set.
    assert "imagenet-100" in floor_warning("imagenet-100", 1.02, 100.0, "the bundle's 4 reference photos")
    assert floor_warning("clipart", 11.32, 100.0, "the bundle's 4 reference photos") is None
    assert floor_warning("x", 0.13, 2.5, "y") is None and floor_warning("x", 0.12, 2.5, "y")  # scale-relative


def _fake_bundle(tmp_path, banks: dict[str, float], random_init: bool = False):
    import json
    from types import SimpleNamespace

    (tmp_path / "parity.json").write_text(json.dumps({"image_encoder": {"fp32": {"banks": {
        name: {"ref_mean_score_color": v} for name, v in banks.items()}}}}))
    return SimpleNamespace(random_init=random_init, reference=SimpleNamespace(photos=["a", "b", "c", "d"]),
                           scoring=SimpleNamespace(score_scale=100.0))


def test_export_warns_when_a_bank_scores_near_the_floor(tmp_path, capsys):
    from foclip.cli.export import warn_floor

    warn_floor(_fake_bundle(tmp_path, {"clipart": 11.32, "imagenet-100": 1.02}), tmp_path)
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("warning:") == 1 and "text bank 'imagenet-100' | scores 1.02 on 0..100 on the bundle's 4" in err
    warn_floor(_fake_bundle(tmp_path, {"imagenet-100": 0.2}, random_init=True), tmp_path)
    assert "warning" not in capsys.readouterr().err  # random weights: the random-weights note says it all


def test_calibrate_warns_when_its_bank_scores_near_the_floor(tmp_path, capsys):
    from types import SimpleNamespace

    import numpy as np

    from foclip.cli.calibrate import warn_floor

    det = SimpleNamespace(manifest=_fake_bundle(tmp_path, {"imagenet-100": 1.02}),
                          text_bank=SimpleNamespace(name="imagenet-100"), score_scale=100.0,
                          bundle=SimpleNamespace(path=tmp_path))
    warn_floor(det, np.array([0.5, 1.5, 2.0]))
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("warning:") == 2 and "the bundle's 4 reference photos" in err and "the 3 originals" in err


@pytest.mark.slow
def test_export_of_the_reference_vit_warns_about_imagenet(tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "b"), "--model", "foclip-ref-vit", "--prompts",
                 "clipart,imagenet-25", "--precision", "fp32"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "text bank 'imagenet-25' | scores" in err and "text bank 'clipart'" not in err
