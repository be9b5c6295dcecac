import json

from foclip.cli.main import main


def test_quick_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    err, stdout = captured.err, " ".join(captured.out.split())
    assert err.count("RANDOMLY INITIALISED") == 1  # once per run, not once per step
    assert "Please consider to run pre-processing" not in err + stdout
    # the last step splits the verdicts by class, and the counts match detections.jsonl
    n_flagged = {cls: 0 for cls in ("original", "manipulated")}
    for r in (json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()):
        n_flagged["manipulated" if "/manipulated/" in r["id"] else "original"] += bool(r["tampered"])
    assert f"{n_flagged['original']} false alarm(s)" in stdout
    assert f"{n_flagged['manipulated']} caught" in stdout and "RANDOM, mechanics only" in stdout
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
