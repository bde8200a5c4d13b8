"""A radbridge transaction Bundle -> HL7v2 ORU^R01 (v2.5.1) with coded OBX, for EHRs that take
results over MLLP instead of FHIR.

MSH-3..6 are the caller's (settings `RADBRIDGE_ORU_SENDING_APPLICATION` ...). With the source
`Report`: PID-3 and PID-5 as the source sent them (FHIR identifiers: value^^^&system&ISO|URI),
PV1 when the source had one, OBR-2/OBR-3 the placer/filler order numbers (EI with namespace and
universal id), OBR-4 the procedure with its code (`24627-2^Chest CT^LN`); without it, what the
Bundle holds (PID-3 from the Patient's identifiers, OBR-3 the accession, OBR-4 text). OBR-25 the
result status and one OBX per Observation: OBX-3 the finding (SNOMED CT code `^…^SCT`, or text only when the
concept is uncoded), OBX-5 the value, OBX-11 the result status, OBX-20 the body site (the
Observation Site, CWE, as the HL7 v2-to-FHIR mapping pairs OBX-20 with `Observation.bodySite`).
A stated side (the laterality extension on `bodySite`) has no field of its own in v2.5.1's OBX
(OBX-20 holds the site's code, and a second OBX-20 repetition would read as a second site): it
follows its finding as one more CWE OBX in the finding's group (same OBX-4 sub-id), OBX-3
`272741003^Laterality (attribute)^SCT`, OBX-5 the side (`24028007^Right (qualifier value)^SCT`).

Result status (HL7 table 0085) follows the clinician's decision and what this destination was
sent before (`sent`, from `result_statuses`): `P` while preliminary, `F` once final (accepted or
corrected), `C` only for a value whose `F` (or `C`) this destination already got and whose value
changed since (else `F`, with the corrected value), `W` for a rejected / entered-in-error value,
and a value sent as `W` that is live again is `C`. OBR-25: `P` while any value is preliminary,
`C` when a value is `C`, else `F`. By value: `valueCodeableConcept` (presence Present/Absent/Equivocal, enum options) ->
OBX-2 `CWE`; `valueInteger` (ordinal) -> `NM`; `valueQuantity` (number) -> `NM` with the UCUM
unit in OBX-6 (`code^display^UCUM`). A presence qualifier (`component`) follows its finding as
one more CWE OBX (OBX-3 the qualifier, OBX-5 the option); both carry the same OBX-4 sub-id.
Codes come only from the Bundle, whose codings come from checked templates
(`mappings.terminology_tables`) and `mappings.terminology`; uncoded concepts are text only. Code systems use HL7 table 0396 names (SCT, LN, UCUM). The evidence
quote is not sent (it is report text).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mappings import terminology as term
from mappings.fhir_out import LATERALITY_EXTENSION
from mappings.flag_hold import held_flags
from mappings.oru_insights import insight_obx, insight_status
from mappings.report import EntityIdentifier, HL7Field, Report

_SYSTEM_NAMES = {term.SNOMED: "SCT", term.LOINC: "LN"}
_REPORT_STATUS = {"preliminary": "P", "final": "F", "corrected": "C", "amended": "C"}
_RESULT_ELEMENTS = ("code", "bodySite", "component", "valueCodeableConcept", "valueInteger",
                    "valueQuantity", "valueString", "valueBoolean")  # fmt: skip


def _result_hash(observation: dict[str, Any]) -> str:
    """A short digest of what an OBX group carries of an Observation (its value and finding)."""
    carried = {k: observation[k] for k in _RESULT_ELEMENTS if k in observation}
    return hashlib.sha256(json.dumps(carried, sort_keys=True).encode()).hexdigest()[:16]


def result_status(observation: dict[str, Any], previous: str | None) -> str:
    """OBX-11 of an Observation given what this destination was sent before (`previous`:
    `<status>:<digest>` from `result_statuses`, None when nothing): see the module docstring."""
    status = str(observation.get("status", ""))
    if status == "entered-in-error":
        return "W"  # never re-sent as a live result
    if status not in ("final", "amended", "corrected"):
        return "P"
    letter, _, digest = (previous or "").partition(":")
    if letter == "W":
        return "C"  # a rejection undone: the live value corrects the withdrawn one
    if letter in ("F", "C"):
        changed = digest != _result_hash(observation) or status in ("amended", "corrected")
        return "C" if changed else letter
    return "F"


def result_statuses(
    bundle: dict[str, Any], sent: Mapping[str, str] | None = None, *, hold_flags: bool = False
) -> dict[str, str]:
    """`Observation/<id>` -> `<OBX-11>:<digest>` for each Observation of a Bundle, and
    `Flag/<id>` -> `<OBX-11>:` for each critical-result Flag it sends (`hold_flags`: not the
    ones held until review, `mappings.flag_hold`; one the destination got before stays
    recorded): what an ORU built now sends (record it once delivered, and pass it back as
    `sent` next time)."""
    previous = sent or {}
    statuses = {}
    resources = [entry.get("resource") or {} for entry in bundle.get("entry", [])]
    held = held_flags(resources, previous) if hold_flags else frozenset()
    for resource in resources:
        kind = resource.get("resourceType")
        key = f"{kind}/{resource.get('id')}"
        if kind == "Observation":
            statuses[key] = f"{result_status(resource, previous.get(key))}:{_result_hash(resource)}"
        elif kind == "Flag" and key not in held:
            statuses[key] = f"{insight_status(resource)}:"
        elif kind == "Flag" and key in previous:
            statuses[key] = previous[key]
    return statuses


def order_status(statuses: Mapping[str, str], report_status: str) -> str:
    """OBR-25 from the OBX-11 letters (`result_statuses`): P while any is P, C when any is C,
    else F; without Observations, the DiagnosticReport's status."""
    letters = {v.partition(":")[0] for k, v in statuses.items() if k.startswith("Observation/")}
    if not letters:
        return _REPORT_STATUS.get(report_status, "P")
    if "P" in letters:
        return "P"
    return "C" if "C" in letters else "F"


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


LATERALITY_CODE = "272741003"
"""SNOMED CT Laterality (attribute): OBX-3 of a finding's laterality OBX."""


def _laterality_code() -> str:
    entry = term.require(term.SNOMED, LATERALITY_CODE)
    return f"{entry.code}^{_escape(entry.display)}^SCT"


def _laterality(observation: dict[str, Any]) -> str:
    """The side on an Observation's `bodySite` as CWE ("" when none is stated)."""
    for extension in (observation.get("bodySite") or {}).get("extension", []):
        if extension.get("url") == LATERALITY_EXTENSION:
            return cwe(extension.get("valueCodeableConcept"))
    return ""


def er7_field(value: HL7Field) -> str:
    """A field kept as the source sent it (`Report.patient_name`, PV1), in this message's
    encoding characters, escaped."""
    return "~".join(
        "^".join("&".join(_escape(sub) for sub in component) for component in repetition)
        for repetition in value
    )


def _entity(entity: EntityIdentifier | None) -> str:
    if entity is None:
        return ""
    parts = [entity.value, entity.namespace, entity.universal_id, entity.universal_id_type]
    return "^".join(_escape(p or "") for p in parts).rstrip("^")


def _source_identifiers(report: Report) -> str:
    """PID-3 from the source: CX value^^^authority(HD)^type (FHIR: the system as universal id)."""
    items = []
    for identifier in report.patient_identifiers:
        universal, kind = identifier.assigner_id or "", identifier.assigner_id_type or ""
        if identifier.system:
            oid = identifier.system.removeprefix("urn:oid:")
            universal, kind = oid, "ISO" if oid != identifier.system else "URI"
        authority = "&".join(_escape(p) for p in (identifier.assigner or "", universal, kind))
        items.append(
            f"{_escape(identifier.value)}^^^{authority.rstrip('&')}^{_escape(identifier.type_code or '')}".rstrip("^")
        )  # fmt: skip
    return "~".join(items)


def _procedure(report: Report | None, fallback: dict[str, Any]) -> str:
    """OBR-4: the source's code^text^system as sent (LOINC/SNOMED URLs as LN/SCT)."""
    procedure = report.procedure if report is not None else None
    if procedure is None:
        return cwe(fallback) if fallback else ""
    system = _SYSTEM_NAMES.get(procedure.system or "", procedure.system or "")
    return "^".join(
        _escape(p) for p in (procedure.code or "", procedure.display or "", system)
    ).rstrip("^")


def oru_from_bundle(
    bundle: dict[str, Any],
    *,
    control_id: str,
    report: Report | None = None,
    sending_application: str = "RADBRIDGE",
    sending_facility: str = "",
    receiving_application: str = "",
    receiving_facility: str = "",
    now: datetime | None = None,
    sent: Mapping[str, str] | None = None,
    hold_flags: bool = False,
) -> bytes:
    """The ORU^R01 message (ER7 bytes with `\\r` segment ends) for one transaction Bundle and
    the source `report` it was extracted from (see the module docstring); `sent`: what this
    destination was sent before (`result_statuses`), for OBX-11 and OBR-25; `hold_flags`
    (RADBRIDGE_FLAGS_HOLD_UNTIL_REVIEW): no OBX for a Flag held until review."""
    statuses = result_statuses(bundle, sent, hold_flags=hold_flags)
    resources = [entry["resource"] for entry in bundle.get("entry", [])]
    held = held_flags(resources, sent or {}) if hold_flags else frozenset()
    patient: dict[str, Any] = next((r for r in resources if r["resourceType"] == "Patient"), {})
    diagnostic: dict[str, Any] = next(
        (r for r in resources if r["resourceType"] == "DiagnosticReport"), {}
    )
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    if report is not None:
        identifiers = _source_identifiers(report)
    else:
        identifiers = "~".join(
            f"{_escape(i['value'])}^^^{_escape((i.get('assigner') or {}).get('display', ''))}^{_escape((i.get('type') or {}).get('text', ''))}"
            for i in patient.get("identifier", [])
        )
    accession = next((i["value"] for i in diagnostic.get("identifier", []) if i.get("value")), "")
    filler = _entity(report.filler_order) if report is not None and report.filler_order else ""
    placer = _entity(report.placer_order) if report is not None else ""
    effective = _hl7_time(str(diagnostic.get("effectiveDateTime", "")))
    name = er7_field(report.patient_name) if report is not None else ""
    segments = [
        f"MSH|^~\\&|{_escape(sending_application)}|{_escape(sending_facility)}|{_escape(receiving_application)}|"
        f"{_escape(receiving_facility)}|{stamp}||ORU^R01^ORU_R01|{_escape(control_id)}|P|2.5.1",
        f"PID|1||{identifiers}||{name}".rstrip("|"),
    ]
    if report is not None and report.visit is not None:
        segments.append(
            "|".join(["PV1", *(er7_field(f) for f in report.visit)]).rstrip("|") or "PV1"
        )
    segments.append(
        f"OBR|1|{placer}|{filler or _escape(accession)}|{_procedure(report, diagnostic.get('code') or {})}|||{effective}"
        + "|" * 18
        + order_status(statuses, str(diagnostic.get("status", ""))),
    )
    index = 0
    for group, observation in enumerate(observations, start=1):
        status = statuses[f"Observation/{observation.get('id')}"].partition(":")[0]
        components = observation.get("component", [])
        laterality = _laterality(observation)
        sub_id = str(group) if components or laterality else ""
        value_type, value, units = obx_value(observation)
        index += 1
        segments.append(
            _obx(
                index, value_type, cwe(observation.get("code")), sub_id, value, units, status,
                effective, cwe(observation.get("bodySite")),
            )
        )  # fmt: skip
        if laterality:
            index += 1
            segments.append(
                _obx(
                    index, "CWE", _laterality_code(), sub_id, laterality, "", status, effective, "",
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
    segments += insight_obx(
        [r for r in resources if f"{r['resourceType']}/{r.get('id')}" not in held],
        index, effective, _escape,
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
