import json

from foclip.cli.main import main


def test_quick_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "RANDOMLY INITIALISED" in err
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    photos = sorted(p.name for p in (out / "photos").iterdir())
    assert len(photos) >= 4
    # every original and every manipulated image got a detection result
    assert len(lines) == 2 * len(photos)
    assert all(r["error"] is None for r in lines)
    assert (out / "calibration.json").is_file()
    manifest_lines = (out / "generated" / "manifest.jsonl").read_text().splitlines()
    # a rerun resumes: no image is generated twice, the bundle is reused
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert (out / "generated" / "manifest.jsonl").read_text().splitlines() == manifest_lines
