"""A radbridge transaction Bundle -> HL7v2 ORU^R01 (v2.5.1) with coded OBX, for EHRs that take
results over MLLP instead of FHIR.

One OBR for the source report (OBR-3 accession, OBR-4 procedure text, OBR-25 result status) and
one OBX per Observation: OBX-2 `CWE`, OBX-3 the finding (SNOMED CT code `^…^SCT`, or text only
when the concept is uncoded), OBX-5 the value (Present/Absent/Equivocal as SNOMED CT qualifiers),
OBX-11 P or F (the Observation status), OBX-20 the body site. Code systems use HL7 table 0396
names (SCT, LN). The evidence quote is not sent (it is report text).
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
    for index, observation in enumerate(observations, start=1):
        fields = [
            "OBX",
            str(index),
            "CWE",
            cwe(observation.get("code")),
            "",
            cwe(observation.get("valueCodeableConcept")),
            "",
            "",
            "",
            "",
            "",
            _OBSERVATION_STATUS.get(str(observation.get("status", "")), "P"),
            "",
            "",
            effective,
            "",
            "",
            "",
            "",
            "",
            cwe(observation.get("bodySite")),
        ]
        segments.append("|".join(fields).rstrip("|"))
    return ("\r".join(segments) + "\r").encode("utf-8")
