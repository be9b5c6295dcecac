"""docs/science.md's in-domain table, REPORT.md's in-domain section and report.json say the same thing."""

from __future__ import annotations

import json
from pathlib import Path

from foclip_train.sections.in_domain import docs_block, in_domain_table

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "in-domain"


def test_science_page_opens_with_the_table_generated_from_report_json():
    report = json.loads((RESULTS / "report.json").read_text(encoding="utf-8"))
    page = (ROOT / "docs" / "science.md").read_text(encoding="utf-8")
    assert docs_block(report) in page
    assert page.index(docs_block(report)) < page.index("## The open questions")  # the page opens with it
    table = in_domain_table(report["sections"]["in_domain"], None)
    assert table in (RESULTS / "REPORT.md").read_text(encoding="utf-8")


def test_the_committed_run_has_two_models_two_arms_and_n_200_where_finished():
    res = json.loads((RESULTS / "report.json").read_text(encoding="utf-8"))["sections"]["in_domain"]
    assert {(r["model"], r["arm"]) for r in res["rows"]} == {
        (m, a) for m in ("foclip-ref-vit", "foclip-ref-rn") for a in ("paper", "matched")}
    assert res["images"] == 200
    unfinished = {tuple(s.split(" ")) for s in res["stopped"]}
    for r in res["rows"]:
        assert r["n"] == 200 or (r["model"], r["arm"], r["prompt_set"]) in unfinished
