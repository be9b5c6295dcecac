"""Shards of a dataset scan, read and scored in this process (no Ray): foclip/batch/shards.py, scan.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("pyarrow")

from foclip.batch.scan import OutputFolder, ShardScanner, count_rows
from foclip.batch.shards import SHARD_ERROR, ReadOptions, plan_shards, read_shard
from foclip.errors import FoclipError
from foclip.rerun import SettingsChanged
from foclip.runtime import Detector

LIMITS = {"max_file_bytes": 256 * 1024 * 1024, "draft_factor": 4}
DETECTOR = {"precision": "fp32", "batch_size": 3, "limits": LIMITS}


def _by_stem(rows):
    return {Path(r["id"]).name.removeprefix("p-").split(".")[0]: r for r in rows if not r.get("error")}


def test_plan_names_tar_parquet_and_file_chunks_stably(dataset):
    a = plan_shards([str(dataset["photos"]), str(dataset["shards"]), str(dataset["cut"])], files_per_shard=3)
    kinds = [(s.kind, s.name) for s in a]
    assert ("tar", "web-000") in kinds and ("parquet", "table-000") in kinds and ("tar", "cut") in kinds
    chunks = [s for s in a if s.kind == "files"]
    assert [len(s.files) for s in chunks] == [3, 1]  # 4 photos in chunks of 3
    assert [s.name for s in plan_shards([str(dataset["photos"]), str(dataset["shards"]), str(dataset["cut"])], 3)] \
        == [s.name for s in a]  # a rerun finds the same names
    globbed = plan_shards([str(dataset["shards"] / "*.tar"), str(dataset["shards"] / "*.parquet")])
    assert [s.name for s in globbed] == ["web-000", "table-000"]
    missing = plan_shards([str(dataset["root"] / "nope.jpg")])
    assert missing[0].files == (str(dataset["root"] / "nope.jpg"),)  # a not_found row, as in foclip detect


def test_tar_members_by_key_bad_member_and_truncated_shard(dataset):
    errors = []
    items = list(read_shard(plan_shards([str(dataset["tar"])])[0], ReadOptions(LIMITS["max_file_bytes"]), errors))
    ids = [i for i, _ in items]
    assert ids == ["s/astronaut", "s/chelsea", "s/coffee", "s/rocket", "s/corrupt"]  # captions skipped
    assert errors == []  # the corrupt member is an item: the runtime's decode turns it into an error row
    errors = []
    items = list(read_shard(plan_shards([str(dataset["cut"])])[0], ReadOptions(LIMITS["max_file_bytes"]), errors))
    assert len(items) < 4 and [e["error"]["code"] for e in errors] == [SHARD_ERROR]
    assert str(dataset["cut"]) in errors[0]["error"]["message"] and errors[0]["id"] == str(dataset["cut"])


def test_oversized_tar_member_is_refused_from_its_header(dataset):
    errors = []
    items = list(read_shard(plan_shards([str(dataset["tar"])])[0], ReadOptions(max_file_bytes=1000), errors))
    assert [i for i, _ in items] == ["s/corrupt"]  # the only member under 1000 bytes
    assert {e["error"]["code"] for e in errors} == {"file_too_large"} and len(errors) == 4


def test_parquet_columns_nulls_and_broken_files(dataset, tmp_path):
    shard = plan_shards([str(dataset["parquet"])])[0]
    errors = []
    items = list(read_shard(shard, ReadOptions(LIMITS["max_file_bytes"], "image", "key"), errors))
    assert [i for i, _ in items] == ["p-astronaut", "p-chelsea", "p-coffee", "p-rocket"]
    assert [(e["id"], e["error"]["code"]) for e in errors] == [("null-0", "empty_file")]
    errors = []
    ids = [i for i, _ in read_shard(shard, ReadOptions(LIMITS["max_file_bytes"]), errors)]
    assert ids[0] == "table-000/0"  # no --id-column: <shard>/<row>
    errors = []
    assert list(read_shard(shard, ReadOptions(LIMITS["max_file_bytes"], "pixels"), errors)) == []
    assert errors[0]["error"]["code"] == SHARD_ERROR and "'pixels'" in errors[0]["error"]["message"]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    errors = []
    assert list(read_shard(plan_shards([str(broken)])[0], ReadOptions(LIMITS["max_file_bytes"]), errors)) == []
    assert [e["error"]["code"] for e in errors] == [SHARD_ERROR]


def test_scanner_rows_equal_foclip_detect_for_files_tar_and_parquet(tiny_bundle, dataset):
    """The actor's work, run here: every shard kind gives the scores `foclip detect` gives the files."""
    with Detector.from_bundle(tiny_bundle, batch_size=3) as det:
        reference = {Path(r.id).stem: r.to_dict() for r in det.detect(sorted(map(str, dataset["photos"].iterdir())))}
    scanner = ShardScanner(str(tiny_bundle), DETECTOR, {"max_file_bytes": LIMITS["max_file_bytes"],
                                                        "id_column": "key"}, threads=1)
    try:
        for s in plan_shards([str(dataset["photos"]), str(dataset["tar"]), str(dataset["parquet"])]):
            rows = scanner.scan(s)
            assert {r["shard"] for r in rows} == {s.name}
            got = _by_stem(rows)
            assert set(got) == set(reference), s.kind
            for stem, ref in reference.items():
                for key in ("score_color", "score_gray", "drop"):
                    assert got[stem][key] == pytest.approx(ref[key], abs=1e-5), (s.kind, stem, key)
                assert got[stem]["tampered"] == ref["tampered"]
            bad = [r for r in rows if r["error"]]
            assert all(r["calibrated"] is False and r["score_scale"] == ref["score_scale"] for r in bad)
            if s.kind == "tar":
                assert [(r["id"], r["error"]["code"]) for r in bad] == [("s/corrupt", "not_an_image")]
    finally:
        scanner.det.close()


def test_output_folder_refuses_changed_settings_and_sweeps_partial_files(tmp_path):
    out = tmp_path / "out"
    folder = OutputFolder(str(out), {"precision": "fp32"}, ("parquet",), fresh=False)
    rows = [{"id": "a", "score_color": 1.0, "score_gray": 0.5, "drop": 0.5, "tampered": True, "error": None,
             "calibrated": False, "score_scale": 100.0, "shard": "s0"}]
    blob = "".join(json.dumps(r) + "\n" for r in rows).encode()
    assert folder.write_shard("s0", blob).flagged == 1
    assert folder.complete("s0") and not folder.complete("s1")
    (out / ".s1.parquet.partial").write_bytes(b"half a file")  # what a kill leaves
    again = OutputFolder(str(out), {"precision": "fp32"}, ("parquet", "jsonl"), fresh=False)
    assert not (out / ".s1.parquet.partial").exists()
    assert not again.complete("s0")  # a jsonl is now asked for too: the shard is done again
    assert again.read_back("s0").images == 1
    with pytest.raises(SettingsChanged, match="precision fp32 \\(this run: int8\\)"):
        OutputFolder(str(out), {"precision": "int8"}, ("parquet",), fresh=False)
    fresh = OutputFolder(str(out), {"precision": "int8"}, ("parquet",), fresh=True)
    assert not fresh.complete("s0")


def test_output_folder_will_not_adopt_a_foreign_folder(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"someone's data")
    with pytest.raises(FoclipError, match="holds parquet files but no _meta.json"):
        OutputFolder(str(tmp_path), {}, ("parquet",), fresh=False)
    assert os.listdir(tmp_path).count("x.parquet") == 1


def test_count_rows():
    res = count_rows("s", [{"tampered": True, "error": None}, {"tampered": None, "error": {"code": "truncated"}},
                           {"tampered": False, "error": None}])
    assert (res.images, res.flagged, res.errors, res.codes) == (3, 1, 1, {"truncated": 1})


def test_output_inside_an_input_folder_is_refused(tiny_bundle, dataset, capsys):
    from foclip.cli.main import main

    code = main(["detect", str(tiny_bundle), str(dataset["root"]), "--ray", "--out", str(dataset["root"] / "scan")])
    assert code == 1
    assert "is inside the input folder" in capsys.readouterr().err
    assert not (dataset["root"] / "scan").exists()


def test_without_ray_the_flag_names_the_extra(tiny_bundle, sample_photo_dir, tmp_path):
    """On an install without Ray, `--ray` says in one line which extra to add, before loading anything."""
    import subprocess
    import sys

    hide = ("import sys\n"
            "class Hide:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        return None if name.partition('.')[0] == 'ray' else next(\n"
            "            (s for f in FINDERS if (s := f.find_spec(name, path, target)) is not None), None)\n"
            "FINDERS = [f for f in sys.meta_path if hasattr(f, 'find_spec')]\n"
            "sys.meta_path[:] = [Hide()]\n"
            "from foclip.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-c", hide, "detect", str(tiny_bundle), str(sample_photo_dir), "--ray",
                          "--out", str(tmp_path / "scan")], capture_output=True, text=True, env=env, check=False,
                         timeout=300)
    assert out.returncode == 1, out.stderr
    assert "ray | is not installed. Expected `pip install 'foclip[batch]'`." in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "scan").exists()


def test_actors_share_the_cpus_and_never_outnumber_them():
    from types import SimpleNamespace

    from foclip.batch.scan import _plan_actors

    def cluster(*cpus):
        return SimpleNamespace(nodes=lambda: [{"Alive": True, "Resources": {"CPU": c}} for c in cpus])

    assert _plan_actors(cluster(2), None) == (1, 2)  # locally: one actor with every core
    assert _plan_actors(cluster(2), 2) == (2, 1)
    assert _plan_actors(cluster(16, 16, 8), None) == (3, 8)  # one per node: each fits on the smallest one
    assert _plan_actors(cluster(16, 16, 8), 4) == (4, 8)
    assert _plan_actors(cluster(4, 4), 8) == (8, 1)
    with pytest.raises(FoclipError, match="--actors | is 3 but the Ray cluster has 2 CPU"):
        _plan_actors(cluster(2), 3)


def test_a_second_writer_is_refused_and_a_failed_run_keeps_finished_shards(tiny_bundle, sample_photo_dir, tmp_path,
                                                                            capsys, monkeypatch):
    """`foclip detect`'s output claim covers --ray's folder: a second run is refused; a run that fails
    after some shards were written (Ctrl-C) leaves them for the rerun."""
    from foclip.cli.main import main
    from foclip.outputs import OutputClaim

    out = tmp_path / "scan"
    argv = ["detect", str(tiny_bundle), str(sample_photo_dir), "--ray", "--shard-size", "2", "--out", str(out)]
    with OutputClaim(out, "--out", "another foclip run"):
        assert main(argv) == 1
    assert "is being written by another run" in capsys.readouterr().err

    import foclip.batch.scan as scan_mod

    def interrupted(cfg, shards, folder, on_shard):  # one shard written, then Ctrl-C
        folder.write_shard(shards[0].name, b'{"id": "x", "tampered": false, "error": null}\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(scan_mod, "scan", interrupted)
    assert main(argv) == 130  # Ctrl-C
    assert len(list(out.glob("*.parquet"))) == 1
