"""Laterality and grades in the ORU^R01 output (issue 21): a finding's stated side follows its
OBX as one more CWE OBX of its group (OBX-3 SNOMED CT 272741003 Laterality (attribute), OBX-5 the
side's code), its site stays OBX-20; its grades are OBX of the group like sizes."""

from __future__ import annotations

from mappings.fhir_out import build_bundle
from mappings.hl7.oru_out import oru_from_bundle
from mappings.report import Report
from mappings.sections import find_sections
from mappings.template import get_template
from workers.rules_stage import extract_rules


def _obx(template_id: str, text: str) -> list[list[str]]:
    report = Report(
        source_format="hl7v2", report_id="r", language="en", text=text,
        sections=find_sections(text),
    )  # fmt: skip
    template = get_template(template_id)
    bundle = build_bundle(report, extract_rules(report, template), template)
    message = oru_from_bundle(bundle, control_id="C1").decode()
    return [s.split("|") for s in message.split("\r") if s.startswith("OBX|")]


def _group(segments: list[list[str]], template_id: str, variable_id: str) -> list[list[str]]:
    """The OBX group of a finding (its OBX first), found by its code."""
    code = get_template(template_id).variable(variable_id).code
    assert code is not None
    (first,) = [s for s in segments if s[3].split("^")[0] == code.code]
    return [s for s in segments if first[4] and s[4] == first[4]]


def test_a_stated_side_is_an_obx_of_the_findings_group() -> None:
    segments = _obx("abdomen", "CT KUB\nA 6 mm calculus in the right kidney. No free air.")
    finding, *rest = _group(segments, "abdomen", "urolithiasis")
    kidney = get_template("abdomen").location("kidney").code
    assert kidney is not None
    assert finding[20].split("^")[0] == kidney.code  # OBX-20: the site, as before
    (laterality,) = [s for s in rest if s[3].startswith("272741003^")]
    assert laterality[2] == "CWE"
    assert laterality[3] == "272741003^Laterality (attribute)^SCT"
    assert laterality[5].split("^")[0] == "24028007"  # Right (qualifier value)
    assert laterality[11] == finding[11]  # the finding's result status
    assert [int(s[1]) for s in segments] == list(range(1, len(segments) + 1))


def test_no_side_no_laterality_obx() -> None:
    segments = _obx("abdomen", "CT KUB\nA 6 mm calculus in the kidney.")
    assert not any(s[3].startswith("272741003^") for s in segments)


def test_grades_are_obx_of_the_findings_group() -> None:
    segments = _obx("msk_radiograph", "XR KNEE LEFT\nModerate osteoarthritis of the knee, KL 3.")
    group = _group(segments, "msk_radiograph", "osteoarthritis")
    by_code = {s[3]: s for s in group}
    assert by_code["^Kellgren-Lawrence grade"][2:6:3] == ["NM", "3"]
    severity = by_code["^Severity"]
    assert severity[2] == "CWE" and severity[5].startswith("6736007^")
    assert by_code["272741003^Laterality (attribute)^SCT"][5].startswith("7771000^")  # Left
