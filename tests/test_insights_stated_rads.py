"""Issue 20 item 5: a RADS category a template Observation states already (same system and
category, evidence holding it) is not a second Observation; per-side categories stay."""

from __future__ import annotations

from typing import Any

from adapter.settings import Settings
from mappings.inbound import report_from_record
from mappings.template import load_builtin_templates
from workers.process import process_reports


def _no_engine() -> Any:
    raise AssertionError("the rules stage needs no engine")


def _bundle(text: str, modality: str | None = None) -> dict[str, Any]:
    report = report_from_record(
        {"id": "r", "text": text, "date": "2025-03-10T09:00:00", "language": "en"},
        default_language="en",
    )
    if modality:
        report = report.model_copy(update={"modality": modality})
    outcome = process_reports(
        [report], list(load_builtin_templates().values()), Settings(stage="rules"), _no_engine
    )
    (result,) = outcome.results
    assert result.bundle is not None
    return result.bundle


def _of(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _variable(resource: dict[str, Any]) -> str:
    (evidence,) = [e for e in resource["extension"] if e["url"].endswith("/evidence")]
    return str(next(p["valueString"] for p in evidence["extension"] if p["url"] == "variable"))


def test_a_category_the_template_states_is_one_observation_with_the_verified_coding() -> None:
    bundle = _bundle(
        "MAMMOGRAM BILATERAL\nIMPRESSION: Suspicious mass in the left breast. BI-RADS 4. "
        "Recommend ultrasound-guided biopsy.",
        modality="MG",
    )
    observations = _of(bundle, "Observation")
    assert "rads" not in [_variable(o) for o in observations]
    (birads,) = [o for o in observations if _variable(o) == "birads"]
    # the mammogram's verified category code the insights Observation carried
    assert [c["code"] for c in birads["valueCodeableConcept"]["coding"]] == ["397144001"]
    (request,) = _of(bundle, "ServiceRequest")
    assert {"reference": f"Observation/{birads['id']}"} in request["reasonReference"]
    (report,) = _of(bundle, "DiagnosticReport")
    results = [r["reference"] for r in report["result"]]
    assert len(results) == len(set(results))


def test_a_category_no_template_states_stays_an_insight() -> None:
    # the thyroid template states the highest level (4): the other nodule's TR3 stays
    bundle = _bundle("US THYROID\nFINDINGS: Right nodule 12 mm, TI-RADS 4. Left nodule TR3.")
    rads = [o for o in _of(bundle, "Observation") if _variable(o) == "rads"]
    assert [o["valueCodeableConcept"]["text"] for o in rads] == ["TR3"]


def test_per_side_categories_stated_together_stay() -> None:
    bundle = _bundle("MAMMOGRAM BILATERAL\nIMPRESSION: BI-RADS right 2, left 4.", modality="MG")
    rads = [o for o in _of(bundle, "Observation") if _variable(o) == "rads"]
    assert sorted((o["bodySite"]["text"], o["valueCodeableConcept"]["text"]) for o in rads) == [
        ("left", "4"),
        ("right", "2"),
    ]


def _birads(text: str) -> str | None:
    bundle = _bundle(text, modality="MG")
    found = [o for o in _of(bundle, "Observation") if _variable(o) == "birads"]
    return str(found[0]["valueCodeableConcept"]["text"]) if found else None


def test_the_other_sides_category_after_a_sided_one_counts_for_the_highest() -> None:
    # "BI-RADS right 2, left 4": the left 4 is read as "BI-RADS left 4" would be, and the
    # template's overall category is the more abnormal one (it was the right side's 2)
    assert _birads("MAMMOGRAM BILATERAL\nIMPRESSION: BI-RADS right 2, left 4.") == (
        "BI-RADS 4: suspicious (no subcategory)"
    )
    assert _birads("MAMMOGRAM BILATERAL\nIMPRESSION: BI-RADS right 4, left 2.") == (
        "BI-RADS 4: suspicious (no subcategory)"
    )
    assert _birads("MAMMOGRAFIE BEIDSEITS\nBEURTEILUNG: BI-RADS rechts 1, links 5.") == (
        "BI-RADS 5: highly suggestive of malignancy"
    )
    assert _birads("MAMMOGRAM BILATERAL\nIMPRESSION: BI-RADS right 1; left 4A.") == (
        "BI-RADS 4A: low suspicion"
    )


def test_words_after_a_sided_category_that_name_no_category_add_none() -> None:
    assert _birads("MAMMOGRAM BILATERAL\nIMPRESSION: BI-RADS right 2, left breast normal.") == (
        "BI-RADS 2: benign"
    )
