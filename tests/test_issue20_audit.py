"""Audit of issue 20 (insights) by real runs: the "Bad input" list through the one per-report use
case (`workers.process.process_reports`, rules stage, built-in templates), each report giving a
valid Bundle with only the insights it states; the four insight resource types built by the
pipeline round-trip through the fhir.resources R4B models unchanged (wire-compatible with R4) and
pass the official R4 JSON schema and FHIR.js. Known gaps are strict xfails naming the gap."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from adapter.settings import Settings
from conformance.validate import _schema, find_fhirjs, validate_documents, validate_resource
from mappings.inbound import report_from_record
from mappings.report import Report
from mappings.template import load_builtin_templates
from workers.process import Result, process_reports

INSIGHT_TYPES = ("ServiceRequest", "Flag", "Communication", "DetectedIssue")


def _no_engine() -> Any:
    raise AssertionError("the rules stage needs no engine")


def _report(report_id: str, text: str, language: str = "en", **update: Any) -> Report:
    record = {"id": report_id, "text": text, "date": "2025-03-10T09:00:00", "language": language}
    report = report_from_record(record, default_language=language)
    return report.model_copy(update=update) if update else report


def _run(*reports: Report) -> list[Result]:
    outcome = process_reports(
        list(reports), list(load_builtin_templates().values()), Settings(stage="rules"), _no_engine
    )
    assert outcome.rejected == []  # nothing dropped: every report has a Bundle
    assert {r.report.report_id for r in outcome.results} == {r.report_id for r in reports}
    return outcome.results


def _of(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _insights(bundle: dict[str, Any]) -> set[tuple[str, ...]]:
    """What a Bundle says as insights, comparable across runs."""
    said: set[tuple[str, ...]] = set()
    for request in _of(bundle, "ServiceRequest"):
        when = request.get("occurrenceDateTime") or json.dumps(request.get("occurrencePeriod"))
        needed = "as-needed" if request.get("asNeededBoolean") else ""
        said.add(("ServiceRequest", request["code"]["text"], str(when), needed))
    said |= {("Flag", f["code"]["text"]) for f in _of(bundle, "Flag")}
    said |= {("Communication",) for _ in _of(bundle, "Communication")}
    said |= {("DetectedIssue", d["code"]["text"]) for d in _of(bundle, "DetectedIssue")}
    for observation in _of(bundle, "Observation"):
        evidence = next(e for e in observation["extension"] if e["url"].endswith("/evidence"))
        template = next(s["valueString"] for s in evidence["extension"] if s["url"] == "template")
        variable = next(s["valueString"] for s in evidence["extension"] if s["url"] == "variable")
        if template.startswith("insights|") and variable == "rads":
            value = observation["valueCodeableConcept"]["text"]
            said.add(("RADS", observation["code"]["text"], value))
        elif "RADS" in observation["code"].get("text", ""):  # a template's category: said once
            value = (observation.get("valueCodeableConcept") or {}).get("text")
            said.add(("RADS", observation["code"]["text"], str(value)))
    return said


BAD_INPUT: list[tuple[str, str, str, dict[str, Any], set[tuple[str, ...]]]] = [
    (
        "no-impression",
        "en",
        "CT ABDOMEN\nFINDINGS: Free intraperitoneal air under the right hemidiaphragm. "
        "The liver is normal.",
        {},
        {("Flag", "Critical result: Free intraperitoneal air")},
    ),
    (
        "split-over-two-sentences",
        "en",
        "CT CHEST\nIMPRESSION: 6 mm nodule in the left lower lobe. A follow-up CT is "
        "recommended. This should be performed in 12 months.",
        {},
        {("ServiceRequest", "CT", "2026-03-10", "")},
    ),
    (
        "interval-in-words-nl",
        "nl",
        "CT THORAX\nCONCLUSIE: Solide nodulus van 5 mm rechter bovenkwab. Controle CT in een jaar.",
        {},
        {("ServiceRequest", "CT", "2026-03-10", "")},
    ),
    (
        "interval-in-words-de",
        "de",
        "MAMMOGRAFIE\nBEURTEILUNG: BI-RADS 3. Kontrolle halbjährlich empfohlen.",
        {},
        {
            ("RADS", "BI-RADS final assessment category", "BI-RADS 3: probably benign"),
            ("ServiceRequest", "Kontrolle", "2025-09-10", ""),
        },
    ),
    (
        "interval-in-words-en",
        "en",
        "XR CHEST\nIMPRESSION: Right lower lobe consolidation. Recommend repeat chest "
        "radiograph in six weeks.",
        {},
        {("ServiceRequest", "radiograph", "2025-04-21", "")},
    ),
    (
        "range-of-days",
        "en",
        "CT CHEST\nIMPRESSION: 7 mm nodule. Recommend CT in 10-14 days.",
        {},
        {("ServiceRequest", "CT", json.dumps({"start": "2025-03-20", "end": "2025-03-24"}), "")},
    ),
    (
        "birads-4a",
        "en",
        "MAMMOGRAM BILATERAL\nIMPRESSION: Suspicious mass in the left breast. BI-RADS 4A. "
        "Recommend ultrasound-guided biopsy.",
        {},
        {
            ("RADS", "BI-RADS final assessment category", "BI-RADS 4A: low suspicion"),
            ("ServiceRequest", "biopsy", "null", ""),
        },
    ),
    (
        "birads-4",
        "en",
        "MAMMOGRAM BILATERAL\nIMPRESSION: Suspicious calcifications in the right breast. "
        "BI-RADS 4. Stereotactic biopsy is recommended.",
        {},
        {
            ("RADS", "BI-RADS final assessment category", "BI-RADS 4: suspicious (no subcategory)"),
            ("ServiceRequest", "biopsy", "null", ""),
        },
    ),
    (
        "rads-as-prior-result",
        "en",
        "MAMMOGRAM BILATERAL\nCOMPARISON: Prior mammogram 2023 was BI-RADS 3.\n"
        "IMPRESSION: Stable benign-appearing findings. BI-RADS 2.",
        {},
        {("RADS", "BI-RADS final assessment category", "BI-RADS 2: benign")},
    ),
    (
        "no-birth-date-no-sex",
        "en",
        "US PELVIS\nIMPRESSION: The uterus and ovaries are normal. 45-year-old woman.",
        {"birth_date": None, "patient_sex": None},
        set(),
    ),
    (
        "impossible-birth-date",  # in the future: no age check, the sex check still runs
        "en",
        "US PELVIS\nIMPRESSION: The uterus and ovaries are normal. 45-year-old woman.",
        {"birth_date": date(2030, 1, 1), "patient_sex": "female"},
        set(),
    ),
    (
        "order-without-laterality",
        "en",
        "XR KNEE\nIMPRESSION: No fracture of the right knee. Mild osteoarthritis.",
        {},
        set(),
    ),
    (
        "negated-recommendation-and-finding",
        "en",
        "CT CHEST\nIMPRESSION: No pulmonary embolism. No follow-up needed.",
        {},
        set(),
    ),
    (
        "negated-recommendation-nl",
        "nl",
        "CT THORAX\nCONCLUSIE: Geen longembolie. Geen aanvullend onderzoek nodig.",
        {},
        set(),
    ),
    (
        "referenced-past-follow-up",
        "en",
        "CT CHEST\nCOMPARISON: Compared with the follow-up CT of 2024.\n"
        "IMPRESSION: Stable 4 mm nodule.",
        {},
        set(),
    ),
]


@pytest.mark.parametrize(
    ("report_id", "language", "text", "update", "expected"),
    BAD_INPUT,
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_gives_a_valid_bundle_with_only_the_stated_insights(
    report_id: str, language: str, text: str, update: dict[str, Any], expected: set[tuple[str, ...]]
) -> None:
    results = _run(_report(report_id, text, language, **update))
    for result in results:
        assert result.bundle is not None
        errors = [p.message for p in validate_resource(result.bundle) if p.severity == "error"]
        assert errors == []
        assert _insights(result.bundle) == expected


def test_a_rads_category_of_a_prior_exam_gives_no_template_value_either() -> None:
    """A prior exam's BI-RADS ("Prior mammogram 2023 was BI-RADS 3", COMPARISON section) is not
    this exam's: the prior-result rule covers the templates' score/category variables too."""
    (result,) = _run(
        _report(
            "prior-birads",
            "MAMMOGRAM BILATERAL\nCOMPARISON: Prior mammogram 2023 was BI-RADS 3.\n"
            "IMPRESSION: Stable benign-appearing findings. BI-RADS 2.",
        )
    )
    (birads,) = [v for v in result.extraction.values if v.variable_id == "birads"]
    assert birads.value == "birads_2"


def test_a_tirads_level_of_a_prior_exam_is_not_this_exams() -> None:
    (result,) = _run(
        _report(
            "prior-tirads",
            "US THYROID\nHISTORY: Follow-up of a nodule previously classified as TI-RADS 4.\n"
            "IMPRESSION: The nodule has resolved. No nodule seen.",
        )
    )
    (tirads,) = [v for v in result.extraction.values if v.variable_id == "tirads_highest"]
    assert tirads.value is None


def test_one_rads_fact_is_one_observation() -> None:
    """Issue 20 item 5: one Observation per concept per report, never the same fact twice."""
    (result,) = _run(
        _report(
            "birads-once",
            "MAMMOGRAM BILATERAL\nIMPRESSION: Suspicious mass in the left breast. BI-RADS 4A.",
        )
    )
    assert result.bundle is not None
    quotes = []
    for observation in _of(result.bundle, "Observation"):
        if "BI-RADS" in observation["code"].get("text", ""):
            evidence = next(e for e in observation["extension"] if e["url"].endswith("/evidence"))
            quotes.append(
                next(s["valueString"] for s in evidence["extension"] if s["url"] == "quote")
            )
    assert len(quotes) == 1


ALL_KINDS = (
    "US PELVIS\nFINDINGS: The uterus is enlarged. Free intraperitoneal air.\n"
    "IMPRESSION: Pneumoperitoneum. 6 mm lung base nodule: per Fleischner, recommend CT in "
    "6-12 months if clinically indicated.\n"
    "Findings were communicated to Dr. Jansen at 09:40."
)


def _all_kinds_bundle() -> dict[str, Any]:
    (result,) = _run(_report("all-kinds", ALL_KINDS, patient_sex="male"))
    assert result.bundle is not None
    return result.bundle


def test_service_request_flag_and_communication_have_the_fields_issue_20_names() -> None:
    bundle = _all_kinds_bundle()
    (report,) = _of(bundle, "DiagnosticReport")
    (patient,) = _of(bundle, "Patient")
    report_ref = {"reference": f"DiagnosticReport/{report['id']}"}
    subject = {"reference": f"Patient/{patient['id']}"}
    (request,) = _of(bundle, "ServiceRequest")
    assert (request["status"], request["intent"], request["subject"]) == (
        "draft",
        "proposal",
        subject,
    )
    assert "requester" not in request
    assert report_ref in request["reasonReference"] and report_ref in request["supportingInfo"]
    assert {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}.items() <= (
        request["code"]["coding"][0].items()
    )
    assert request["occurrencePeriod"] == {"start": "2025-09-10", "end": "2026-03-10"}
    assert "occurrenceDateTime" not in request
    assert request["asNeededBoolean"] is True
    assert request["note"] == [{"text": "Guideline: Fleischner"}]
    (flag,) = _of(bundle, "Flag")
    assert (flag["status"], flag["subject"]) == ("active", subject)
    assert flag["category"][0]["coding"][0]["code"] == "clinical"
    assert flag["extension"][0] == {
        "url": "http://hl7.org/fhir/StructureDefinition/flag-detail",
        "valueReference": report_ref,
    }
    assert flag["meta"]["security"][0]["code"] == "AIAST"
    (communication,) = _of(bundle, "Communication")
    assert (communication["status"], communication["subject"]) == ("completed", subject)
    assert communication["recipient"] == [{"display": "Dr. Jansen"}]
    assert report_ref in communication["about"]
    (issue,) = _of(bundle, "DetectedIssue")
    assert issue["status"] == "preliminary" and issue["implicated"] == [report_ref]


def test_a_communication_with_a_stated_date_and_time_has_sent() -> None:
    (result,) = _run(
        _report(
            "sent",
            "CT ANGIO CHEST\nIMPRESSION: Acute pulmonary embolism. Findings were communicated "
            "to Dr. Jansen by telephone on 2025-03-10 at 09:40.",
        )
    )
    assert result.bundle is not None
    (communication,) = _of(result.bundle, "Communication")
    assert communication["sent"].startswith("2025-03-10T09:40")


def test_a_conditional_recommendation_without_a_verb_is_a_service_request() -> None:
    (result,) = _run(
        _report("cond", "XR KNEE LEFT\nIMPRESSION: Mild OA. MRI knee if symptoms persist.")
    )
    assert result.bundle is not None
    requests = _of(result.bundle, "ServiceRequest")
    (request,) = requests
    assert request["asNeededBoolean"] is True


@pytest.mark.parametrize("kind", INSIGHT_TYPES)
def test_built_insight_resources_are_wire_compatible_between_r4b_and_r4(kind: str) -> None:
    """Each resource the pipeline built reads into the R4B model and comes back out identical
    (no element dropped or renamed), the R4B model has exactly the R4 schema's elements, and the
    resource passes the official R4 JSON schema."""
    import importlib

    module = importlib.import_module(f"fhir.resources.R4B.{kind.lower()}")
    model = getattr(module, kind)
    (resource,) = _of(_all_kinds_bundle(), kind)
    assert (
        json.loads(model.model_validate(resource).model_dump_json(exclude_none=True, by_alias=True))
        == resource
    )
    r4 = {k for k in _schema()["definitions"][kind]["properties"] if not k.startswith("_")}
    r4b = {k for k in model.model_fields if not k.endswith("__ext") and k != "fhir_comments"}
    assert r4 - {"resourceType"} == r4b
    assert [p.message for p in validate_resource(resource) if p.severity == "error"] == []


def test_built_insight_resources_pass_fhirjs() -> None:
    if shutil.which("node") is None or find_fhirjs() is None:
        pytest.skip("Node.js or the npm fhir package is absent: the FHIR.js check is optional")
    bundle = _all_kinds_bundle()
    assert {k for k in INSIGHT_TYPES if _of(bundle, k)} == set(INSIGHT_TYPES)
    problems = validate_documents([("all-kinds", bundle)])
    assert [p for p in problems if p.severity == "error"] == []


def test_the_html_eval_report_shows_each_insight_kind() -> None:
    """`radbridge eval` of the labelled insights set (dev half): report.html has a row per
    insight kind with its counts, and no report text."""
    from html.parser import HTMLParser

    from conformance.insights_eval import insights_html, run_insights_evaluation

    labelled = Path(__file__).parent / "fixtures" / "labelled" / "insights.jsonl"
    result, _ = run_insights_evaluation(labelled, "dev", resamples=20)
    page = insights_html(result)

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[str]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "tr":
                self.rows.append([])

        def handle_data(self, data: str) -> None:
            if self.rows and data.strip():
                self.rows[-1].append(data.strip())

    parser = Rows()
    parser.feed(page)
    shown = {row[0]: row[1:4] for row in parser.rows[1:]}
    kinds = ("followups", "critical", "communications", "rads", "mismatches", "sizes")
    assert set(kinds) <= set(shown)
    for kind in kinds:
        counts = result["kinds"][kind]
        assert shown[kind] == [
            str(counts["tp"] + counts["fn"]),
            str(counts["tp"]),
            str(counts["fp"]),
        ]
    first = json.loads(labelled.read_text("utf-8").splitlines()[0])
    assert first["text"][:40] not in page


def test_show_of_an_output_folder_says_which_report_had_no_template(tmp_path: Path) -> None:
    """Issue 20 item 1: `radbridge show DIR` shows the no-template report's Bundle (its insights)
    and says `no_template` for it (from DIR/rejected.jsonl)."""
    import os
    import subprocess
    import sys

    records = tmp_path / "in.jsonl"
    text = "US SCROTUM\nIMPRESSION: Left testicular torsion. Recommend ultrasound in 6 weeks."
    record = {"id": "nt1", "text": text, "language": "en", "date": "2025-03-10"}
    records.write_text(json.dumps(record) + "\n", "utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "app.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)

    assert cli("extract", str(records), "--out", str(out), "--stage", "rules").returncode == 0
    shown = cli("show", str(out))
    assert shown.returncode == 0, shown.stderr
    assert "ServiceRequest" in shown.stdout and "Flag" in shown.stdout
    (row,) = [line for line in shown.stdout.splitlines() if "no_template" in line]
    assert "nt1" in row
