"""A radbridge transaction Bundle -> HL7v2 ORU^R01 (v2.5.1) with coded OBX, for EHRs that take
results over MLLP instead of FHIR.

One OBR for the source report (OBR-3 accession, OBR-4 procedure text, OBR-25 result status) and
one OBX per Observation: OBX-3 the finding (SNOMED CT code `^…^SCT`, or text only when the
concept is uncoded), OBX-5 the value, OBX-11 P or F (the Observation status), OBX-20 the body
site. By value: `valueCodeableConcept` (presence Present/Absent/Equivocal, enum options) ->
OBX-2 `CWE`; `valueInteger` (ordinal) -> `NM`; `valueQuantity` (number) -> `NM` with the UCUM
unit in OBX-6 (`code^display^UCUM`). A presence qualifier (`component`) follows its finding as
one more CWE OBX (OBX-3 the qualifier, OBX-5 the option); both carry the same OBX-4 sub-id.
Codes come only from the Bundle, whose codings come from checked templates
(`mappings.terminology_tables`) and `mappings.terminology`; uncoded concepts are text only. Code systems use HL7 table 0396 names (SCT, LN, UCUM). The evidence
quote is not sent (it is report text).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mappings import terminology as term

_SYSTEM_NAMES = {term.SNOMED: "SCT", term.LOINC: "LN"}
_OBSERVATION_STATUS = {"preliminary": "P", "final": "F", "amended": "C", "corrected": "C"}
_REPORT_STATUS = {"preliminary": "P", "final": "F", "corrected": "C", "amended": "C"}


def _escape(text: str) -> str:
    mapping = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}
    return "".join(mapping.get(c, c) for c in text).replace("\r", " ").replace("\n", " ")


def _hl7_time(value: str) -> str:
    """FHIR dateTime -> HL7 DTM with offset (empty when unreadable)."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y%m%d%H%M%S%z")
    except ValueError:
        return ""


def cwe(concept: dict[str, Any] | None) -> str:
    """A CodeableConcept as CWE: code^text^system (text only when uncoded)."""
    if not concept:
        return ""
    for coding in concept.get("coding", []):
        system = _SYSTEM_NAMES.get(coding.get("system", ""))
        if system and coding.get("code"):
            return f"{_escape(coding['code'])}^{_escape(coding.get('display', ''))}^{system}"
    return f"^{_escape(str(concept.get('text', '')))}"


def oru_from_bundle(
    bundle: dict[str, Any],
    *,
    control_id: str,
    sending_application: str = "RADBRIDGE",
    sending_facility: str = "",
    receiving_application: str = "",
    receiving_facility: str = "",
    now: datetime | None = None,
) -> bytes:
    """The ORU^R01 message (ER7 bytes with `\\r` segment ends) for one transaction Bundle."""
    resources = [entry["resource"] for entry in bundle.get("entry", [])]
    patient: dict[str, Any] = next((r for r in resources if r["resourceType"] == "Patient"), {})
    report: dict[str, Any] = next(
        (r for r in resources if r["resourceType"] == "DiagnosticReport"), {}
    )
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    identifiers = "~".join(
        f"{_escape(i['value'])}^^^{_escape((i.get('assigner') or {}).get('display', ''))}^{_escape((i.get('type') or {}).get('text', ''))}"
        for i in patient.get("identifier", [])
    )
    accession = next((i["value"] for i in report.get("identifier", []) if i.get("value")), "")
    effective = _hl7_time(str(report.get("effectiveDateTime", "")))
    segments = [
        f"MSH|^~\\&|{_escape(sending_application)}|{_escape(sending_facility)}|{_escape(receiving_application)}|"
        f"{_escape(receiving_facility)}|{stamp}||ORU^R01^ORU_R01|{_escape(control_id)}|P|2.5.1",
        f"PID|1||{identifiers}",
        f"OBR|1||{_escape(accession)}|^{_escape(str((report.get('code') or {}).get('text', '')))}|||{effective}"
        + "|" * 18
        + _REPORT_STATUS.get(str(report.get("status", "")), "P"),
    ]
    index = 0
    for group, observation in enumerate(observations, start=1):
        status = _OBSERVATION_STATUS.get(str(observation.get("status", "")), "P")
        components = observation.get("component", [])
        sub_id = str(group) if components else ""
        value_type, value, units = obx_value(observation)
        index += 1
        segments.append(
            _obx(
                index, value_type, cwe(observation.get("code")), sub_id, value, units, status,
                effective, cwe(observation.get("bodySite")),
            )
        )  # fmt: skip
        for component in components:
            index += 1
            component_type, component_value, component_units = obx_value(component)
            segments.append(
                _obx(
                    index, component_type, cwe(component.get("code")), sub_id, component_value,
                    component_units, status, effective, "",
                )
            )  # fmt: skip
    return ("\r".join(segments) + "\r").encode("utf-8")


def _number(value: object) -> str:
    """A FHIR decimal/integer as HL7 NM (no exponent, no trailing .0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return format(value, "f").rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def obx_value(element: dict[str, Any]) -> tuple[str, str, str]:
    """(OBX-2 value type, OBX-5 value, OBX-6 units) of an Observation or a component."""
    if "valueInteger" in element:
        return "NM", _number(element["valueInteger"]), ""
    if "valueQuantity" in element:
        quantity = element["valueQuantity"]
        units = ""
        if quantity.get("system") == term.UCUM and quantity.get("code"):
            units = f"{_escape(quantity['code'])}^{_escape(quantity.get('unit', quantity['code']))}^UCUM"
        return "NM", _number(quantity.get("value")), units
    return "CWE", cwe(element.get("valueCodeableConcept")), ""


def _obx(
    index: int,
    value_type: str,
    code: str,
    sub_id: str,
    value: str,
    units: str,
    status: str,
    effective: str,
    body_site: str,
) -> str:
    fields = [
        "OBX", str(index), value_type, code, sub_id, value, units, "", "", "", "", status, "", "",
        effective, "", "", "", "", "", body_site,
    ]  # fmt: skip
    return "|".join(fields).rstrip("|")
