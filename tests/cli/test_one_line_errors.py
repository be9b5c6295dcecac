"""Every command ends a user error with one line (issue 25): a file where a folder is expected as
``--out`` (a folder where a file is), a missing input, and an unwritable place. The unwritable place
is a path under a regular file, which no process can create, root included (chmod does not stop root)."""

from __future__ import annotations

import pytest
from PIL import Image

from foclip.cli.main import main

TINY = ["--model", "foclip-tiny", "--pretrained", "random"]


@pytest.fixture(scope="module")
def places(tmp_path_factory, sample_photos):
    root = tmp_path_factory.mktemp("walk")
    afile = root / "afile.txt"
    afile.write_text("x")
    photos = root / "photos"
    gen = root / "gen"
    for d in (photos, gen / "original", gen / "manipulated"):
        d.mkdir(parents=True)
    name, arr = next(iter(sample_photos.items()))
    for d in (photos, gen / "original", gen / "manipulated"):
        Image.fromarray(arr).save(d / f"{name}.png")
    return {"root": root, "file": str(afile), "under": str(afile / "sub" / "out"), "photos": str(photos),
            "gen": str(gen), "missing": str(root / "nope"), "missing_png": str(root / "nope.png")}


def _cases(p: dict, bundle: str) -> dict[str, list[str]]:
    folder, f, under, miss = str(p["root"]), p["file"], p["under"], p["missing"]
    return {
        "generate out=file": ["generate", p["photos"], "--out", f, *TINY],
        "generate missing": ["generate", miss, "--out", folder + "/g", *TINY],
        "generate unwritable": ["generate", p["photos"], "--out", under, *TINY],
        "export out=file": ["export", "--out", f, *TINY],
        "export unwritable": ["export", "--out", under, *TINY],
        "export missing prompts": ["export", "--out", folder + "/e", *TINY, "--prompts", p["missing_png"]],
        "inspect missing": ["inspect", miss],
        "build-engine missing": ["build-engine", miss],
        "detect out=folder": ["detect", bundle, p["photos"], "--out", folder],
        "detect missing bundle": ["detect", miss, p["photos"]],
        "detect missing input": ["detect", bundle, p["missing_png"]],
        "detect unwritable": ["detect", bundle, p["photos"], "--out", under],
        "calibrate out=folder": ["calibrate", bundle, "--originals", p["gen"], "--out", folder],
        "calibrate missing": ["calibrate", bundle, "--originals", miss],
        "calibrate missing bundle": ["calibrate", miss, "--originals", p["gen"]],
        "calibrate unwritable": ["calibrate", bundle, "--originals", p["gen"], "--out", under],
        "calibrate plots=file": ["calibrate", bundle, "--originals", p["gen"], "--out", folder + "/c.json",
                                 "--plots", f],
        "reproduce out=file": ["reproduce", "--quick", "--out", f, *TINY],
        "reproduce unwritable": ["reproduce", "--quick", "--out", under, *TINY],
        "reproduce missing": ["reproduce", miss, "--out", folder + "/r", *TINY],
        "serve missing": ["serve", miss],
        "bench detect out=folder": ["bench", "detect", bundle, "--out", folder, "--samples", "2"],
        "bench detect unwritable": ["bench", "detect", bundle, "--out", under, "--samples", "2"],
        "bench detect missing bundle": ["bench", "detect", miss],
        "bench detect missing image": ["bench", "detect", bundle, p["missing_png"]],
        "bench generate missing checkpoint": ["bench", "generate", "--model", "foclip-tiny", "--pretrained",
                                              p["missing"] + ".safetensors"],
        "demo out=file": ["demo", "--quick", "--out", f],
        "demo unwritable": ["demo", "--quick", "--out", under],
        "reference build out=file": ["reference", "build", "--out", f, "--work", folder + "/rw"],
        "reference build work=file": ["reference", "build", "--work", f],
        "reference select work=file": ["reference", "select", "--work", f],
        "data wild out=file": ["data", "wild", "--out", f],
        "data wild unwritable": ["data", "wild", "--out", under],
    }


CASES = list(_cases({k: "" for k in ("root", "file", "under", "photos", "gen", "missing", "missing_png")}, ""))


def test_every_command_is_walked():
    from foclip.cli.main import COMMANDS

    walked = {name.split()[0] for name in CASES}
    assert walked == {name for name, _ in COMMANDS}


@pytest.mark.parametrize("case", CASES)
def test_user_error_is_one_line(case, places, tiny_bundle, capsys):
    argv = _cases(places, str(tiny_bundle))[case]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], err  # the run ends with it
    assert " | " in errors[0] and "Expected" in errors[0], err
