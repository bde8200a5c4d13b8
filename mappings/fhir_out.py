"""`Extraction` -> FHIR R4 transaction Bundle (docs/architecture.md 'Observation shapes').

The Bundle holds a Patient (identifiers only, never names), the model Device, the source
DiagnosticReport whose `result` lists the Observations, one Observation per emitted value and a
Provenance (target = the Observations, agent = the Device, entity = the DiagnosticReport).
`not_mentioned` values give no Observation; a value gives one Observation per stated site
(`mappings.observation_sites`: a location that expands, e.g. bilateral, gives one per site; a
side beside a lobe of it gives the lobe only; a general finding is not emitted beside an
included specific one for the same statement). A finding's stated side is its `bodySite`'s
laterality (`LATERALITY_EXTENSION`, the template's side option code; bilateral gives one
Observation per side; a site that names its side gets none). Every resource carries the AIAST security label.

Ids are UUIDv5 in `RADBRIDGE_NAMESPACE` of (sending facility, accession or report id, template,
variable, site, and the side where a finding has one Observation per side) and every entry is a `PUT Type/id`, so replaying a report never duplicates.

Project extension (one canonical base, `EXTENSION_BASE`): `EXTENSION_BASE/evidence` on each
Observation, with sub-extensions `quote` (string), `start`/`end` (integer code-point offsets
into the normalised report text, present when the quote was found), `verified` (boolean),
`confidence` (decimal), `stage` (code), `flag` (code, repeated), `template` (string
`id|version`) and `variable` (string); a clinician's correction (`mappings/review.py`) adds
`ai-value` (the AI's value[x]) and `ai-body-site` (CodeableConcept). `EXTENSION_BASE/laterality`
(valueCodeableConcept) on `bodySite` is the finding's stated side.

Values by variable type: presence -> `valueCodeableConcept` Present/Absent/Equivocal (SNOMED CT
qualifiers) and, for a qualifier, one `component` (the qualifier concept, the option as
`valueCodeableConcept`); ordinal -> `valueInteger`; number -> `valueQuantity` (UCUM);
enum -> `valueCodeableConcept` (the option's code and text, or text only). A typed value whose
value was dropped (flag `value_invalid`) gives no Observation, like `not_mentioned`: it is in the
extraction record only. A finding's stated sizes are `component`s of its (first) Observation
(`mappings.fhir_components`), its grades too (`mappings.fhir_grades`). `derived_from` (variable id
-> `Observation/<id>` of the same finding in the patient's earlier report) becomes `Observation.derivedFrom`.

Each Bundle passes the output check before it is returned (`mappings.output_check`: the
official R4 JSON schema, once per Bundle); a Bundle that fails raises FhirMappingError.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from mappings import terminology as term
from mappings.errors import FhirMappingError
from mappings.fhir_components import code_concept, size_components
from mappings.fhir_grades import grade_components
from mappings.normal_result import NORMAL_RESULT, is_normal_study
from mappings.observation_sites import Place, observation_places
from mappings.output_check import check_bundle
from mappings.report import Extraction, FindingStatus, FindingValue, Report, ResultStatus
from mappings.template import Template, Variable, VariableType

EXTENSION_BASE = "https://radbridge.org/fhir/StructureDefinition"
EVIDENCE_EXTENSION = f"{EXTENSION_BASE}/evidence"
LATERALITY_EXTENSION = f"{EXTENSION_BASE}/laterality"
MODEL_HASH_SYSTEM = "https://radbridge.org/fhir/sid/model-sha256"
RADBRIDGE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://radbridge.org/fhir")

_PRESENCE_VALUE = {
    FindingStatus.PRESENT: "52101004",
    FindingStatus.ABSENT: "2667000",
    FindingStatus.UNCERTAIN: "42425007",
}
_REPORT_STATUS = {
    ResultStatus.FINAL: "final",
    ResultStatus.PRELIMINARY: "preliminary",
    ResultStatus.CORRECTED: "corrected",
}

Resource = dict[str, Any]


def presence_value_code(status: FindingStatus) -> str | None:
    """The SNOMED CT qualifier (system `terminology.SNOMED`) a presence variable's status
    becomes as `valueCodeableConcept`; None for `not_mentioned` (no Observation)."""
    return _PRESENCE_VALUE.get(status)


def deterministic_id(*parts: str | None) -> str:
    """UUIDv5 of the parts (None -> empty) in the project namespace."""
    return str(uuid.uuid5(RADBRIDGE_NAMESPACE, "|".join(part or "" for part in parts)))


def report_key(report: Report) -> str:
    """What a report's resources are keyed on: its accession number, else its own id."""
    return report.accession_number or report.report_id


def diagnostic_report_id(report: Report) -> str:
    """The id of the DiagnosticReport radbridge builds for `report`."""
    return deterministic_id("DiagnosticReport", report.sending_facility, report_key(report))


def provenance_id(report: Report, template_id: str, template_version: str) -> str:
    """The id of the Provenance of `report`'s extraction under one template version."""
    return deterministic_id(
        "Provenance", report.sending_facility, report_key(report), template_id, template_version
    )


def diagnostic_report_of(bundle: Resource) -> Resource | None:
    """The DiagnosticReport a radbridge Bundle carries, or None."""
    for entry in bundle.get("entry", []):
        if entry["resource"]["resourceType"] == "DiagnosticReport":
            resource: Resource = entry["resource"]
            return resource
    return None


def _security() -> dict[str, Any]:
    return {"security": [term.coding(term.V3_OBSERVATION_VALUE, "AIAST")]}


def fhir_datetime(moment: datetime, default_tz: tzinfo = UTC) -> str:
    """A FHIR dateTime/instant of an aware moment (a naive one is read in `default_tz`): ISO
    8601 with its offset, `Z` for UTC (as the R4B models write it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=default_tz)
    text = moment.isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def evidence_offsets(resource: Resource) -> tuple[int, int] | None:
    """The (start, end) of a resource's evidence extension in the report text, or None."""
    for extension in resource.get("extension") or []:
        if extension.get("url") != EVIDENCE_EXTENSION:
            continue
        parts = {p["url"]: p for p in extension.get("extension") or []}
        if "start" in parts and "end" in parts:
            return parts["start"]["valueInteger"], parts["end"]["valueInteger"]
    return None


def _evidence_extension(value: FindingValue, template: Template) -> dict[str, Any]:
    subs: list[dict[str, Any]] = []
    if value.evidence is not None:
        subs.append({"url": "quote", "valueString": value.evidence.quote})
        if value.evidence.start is not None and value.evidence.end is not None:
            subs.append({"url": "start", "valueInteger": value.evidence.start})
            subs.append({"url": "end", "valueInteger": value.evidence.end})
        subs.append({"url": "verified", "valueBoolean": value.evidence.verified})
    else:
        subs.append({"url": "verified", "valueBoolean": False})
    if value.confidence is not None:
        subs.append({"url": "confidence", "valueDecimal": value.confidence})
    subs.append({"url": "stage", "valueCode": value.stage.value})
    subs.extend({"url": "flag", "valueCode": flag} for flag in value.flags)
    subs.append({"url": "template", "valueString": f"{template.id}|{template.version}"})
    subs.append({"url": "variable", "valueString": value.variable_id})
    return {"url": EVIDENCE_EXTENSION, "extension": subs}


class _Context:
    """What every resource of one Bundle shares."""

    def __init__(self, report: Report, extraction: Extraction, default_tz: tzinfo) -> None:
        self.report = report
        self.extraction = extraction
        self.key = report_key(report)
        self.facility = report.sending_facility
        moment = report.observation_time or extraction.created
        self.effective = fhir_datetime(moment, default_tz)
        first_id = report.patient_identifiers[0] if report.patient_identifiers else None
        patient_key = (
            f"{first_id.system or first_id.assigner or ''}|{first_id.value}"
            if first_id
            else f"report|{self.key}"
        )
        self.patient_id = deterministic_id("Patient", self.facility, patient_key)
        self.device_id = deterministic_id("Device", extraction.model.sha256)
        self.report_fhir_id = diagnostic_report_id(report)
        self.provenance_id = provenance_id(
            report, extraction.template_id, extraction.template_version
        )


def _patient(ctx: _Context) -> Resource:
    identifiers = []
    for identifier in ctx.report.patient_identifiers:
        item: dict[str, Any] = {"value": identifier.value}
        if identifier.system:
            item["system"] = identifier.system
        if identifier.type_code:
            item["type"] = {"text": identifier.type_code}
        if identifier.assigner:
            item["assigner"] = {"display": identifier.assigner}
        identifiers.append(item)
    resource: Resource = {"resourceType": "Patient", "id": ctx.patient_id, "meta": _security()}
    if identifiers:
        resource["identifier"] = identifiers
    return resource


def _device(ctx: _Context) -> Resource:
    model = ctx.extraction.model
    resource: Resource = {
        "resourceType": "Device",
        "id": ctx.device_id,
        "identifier": [{"system": MODEL_HASH_SYSTEM, "value": model.sha256}],
        "deviceName": [{"name": model.name, "type": "model-name"}],
        "type": {"text": "Large language model (llama.cpp, GGUF)"},
    }
    if model.version:
        resource["version"] = [{"value": model.version}]
    return resource


def _diagnostic_report(ctx: _Context, observation_ids: list[str], normal: bool = False) -> Resource:
    report = ctx.report
    identifiers: list[dict[str, Any]] = []
    if report.accession_number:
        identifiers.append(
            {
                "type": {"coding": [term.coding(term.V2_0203, "ACSN")]},
                "value": report.accession_number,
            }
        )
    code: dict[str, Any] = {
        "text": (report.procedure.display or report.procedure.code)
        if report.procedure
        else "Radiology report"
    }
    procedure = report.procedure
    if (
        procedure
        and procedure.code
        and procedure.system in (term.LOINC, "LN")
        and term.is_known(term.LOINC, procedure.code)
    ):
        code["coding"] = [term.coding(term.LOINC, procedure.code)]
    resource: Resource = {
        "resourceType": "DiagnosticReport",
        "id": ctx.report_fhir_id,
        "meta": _security(),
        "status": _REPORT_STATUS[report.result_status],
        "category": [{"coding": [term.coding(term.V2_0074, "RAD")]}],
        "code": code,
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "effectiveDateTime": ctx.effective,
        "result": [{"reference": f"Observation/{oid}"} for oid in observation_ids],
    }
    if identifiers:
        resource["identifier"] = identifiers
    if normal:  # a global normal statement and no finding (mappings.normal_result)
        resource["conclusionCode"] = [{"coding": [term.coding(term.SNOMED, NORMAL_RESULT)]}]
    if not observation_ids:
        del resource["result"]
    return resource


def _observation_id(
    facility: str | None, key: str, template_id: str, variable_id: str, place: Place
) -> str:
    """The site's id; a side only where the finding has one Observation per side there, so
    a finding with one side keeps the id it had before sides reached the Bundle."""
    site = place.site.id if place.site else ""
    sides = (place.side.id,) if place.split and place.side is not None else ()
    return deterministic_id("Observation", facility, key, template_id, variable_id, site, *sides)


def _body_site(place: Place) -> Resource | None:
    """The site's concept (its code and label, as without a side: the review view and the ORU
    output read them) with the stated side's laterality; a side without a site: the side as
    text, with its laterality."""
    site, side = place.site, place.side
    if side is None:
        return None if site is None else code_concept(site.code, site.label)
    concept = code_concept(site.code, site.label) if site else {"text": side.label}
    laterality = {
        "url": LATERALITY_EXTENSION,
        "valueCodeableConcept": code_concept(side.code, side.label),
    }
    return {"extension": [laterality], **concept}


def observation_references(
    report: Report,
    template: Template,
    value: FindingValue,
    among: Sequence[FindingValue] | None = None,
) -> list[str]:
    """`Observation/<id>` of each Observation `build_bundle` emits for `value` (for the timeline);
    `among`: the extraction's values, for the general-finding rule (`mappings.observation_sites`)."""
    places = observation_places(template, among if among is not None else [value])
    facility, key = report.sending_facility, report.accession_number or report.report_id
    ids = [
        _observation_id(facility, key, template.id, value.variable_id, place)
        for place in places.get(value.variable_id, [])
    ]
    return [f"Observation/{observation_id}" for observation_id in ids]


def _value_elements(value: FindingValue, variable: Variable) -> Resource:
    """The `value[x]` (and `component`) of one Observation, by variable type."""
    if variable.type is VariableType.ORDINAL:
        if not isinstance(value.value, int) or isinstance(value.value, bool):
            raise FhirMappingError(f"{variable.id}: an ordinal value must be an integer")
        return {"valueInteger": value.value}
    if variable.type is VariableType.NUMBER:
        if not isinstance(value.value, (int, float)) or isinstance(value.value, bool):
            raise FhirMappingError(f"{variable.id}: a number value must be numeric")
        assert variable.unit is not None  # checked when the template was loaded
        return {
            "valueQuantity": {
                "value": value.value,
                "unit": variable.unit.display,
                "system": term.UCUM,
                "code": variable.unit.code,
            }
        }
    if variable.type is VariableType.ENUM:
        try:
            option = variable.option(str(value.value))
        except KeyError:
            raise FhirMappingError(f"{variable.id}: unknown option {value.value!r}") from None
        return {"valueCodeableConcept": code_concept(option.code, option.label)}
    elements: Resource = {
        "valueCodeableConcept": {
            "coding": [term.coding(term.SNOMED, _PRESENCE_VALUE[value.status])],
            "text": value.status.value,
        }
    }
    qualifier = variable.qualifier
    if qualifier is not None and value.value is not None:
        try:
            option = qualifier.option(str(value.value))
        except KeyError:
            raise FhirMappingError(
                f"{variable.id}: unknown {qualifier.id} {value.value!r}"
            ) from None
        elements["component"] = [
            {
                "code": code_concept(qualifier.code, qualifier.label),
                "valueCodeableConcept": code_concept(option.code, option.label),
            }
        ]
    return elements


_OBSERVATION_REF = re.compile(r"^Observation/[A-Za-z0-9\-.]{1,64}$")


def _observation(
    ctx: _Context,
    template: Template,
    value: FindingValue,
    place: Place,
    status: str,
    derived_from: str | None = None,
    first_site: bool = True,
) -> Resource:
    variable = template.variable(value.variable_id)
    resource: Resource = {
        "resourceType": "Observation",
        "id": _observation_id(ctx.facility, ctx.key, template.id, value.variable_id, place),
        "meta": _security(),
        "extension": [_evidence_extension(value, template)],
        "status": status,
        "category": [{"coding": [term.coding(term.OBSERVATION_CATEGORY, "imaging")]}],
        "code": code_concept(variable.code, variable.label),
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "effectiveDateTime": ctx.effective,
        "issued": fhir_datetime(ctx.extraction.created.astimezone(UTC)),
        "device": {"reference": f"Device/{ctx.device_id}"},
    }
    if derived_from is not None:
        resource["derivedFrom"] = [{"reference": derived_from}]
    resource.update(_value_elements(value, variable))
    if first_site:
        sizes = size_components(value, EVIDENCE_EXTENSION)
        sizes += grade_components(template, value, EVIDENCE_EXTENSION)
        if sizes:
            resource["component"] = [*resource.get("component", []), *sizes]
    body_site = _body_site(place)
    if body_site is not None:
        resource["bodySite"] = body_site
    return resource


def _provenance(ctx: _Context, observation_ids: list[str]) -> Resource:
    return {
        "resourceType": "Provenance",
        "id": ctx.provenance_id,
        "meta": _security(),
        "target": [{"reference": f"Observation/{oid}"} for oid in observation_ids],
        "recorded": fhir_datetime(ctx.extraction.created.astimezone(UTC)),
        "agent": [
            {
                "type": {"coding": [term.coding(term.PROVENANCE_PARTICIPANT_TYPE, "assembler")]},
                "who": {"reference": f"Device/{ctx.device_id}"},
            }
        ],
        "entity": [
            {"role": "source", "what": {"reference": f"DiagnosticReport/{ctx.report_fhir_id}"}}
        ],
    }


def build_bundle(
    report: Report,
    extraction: Extraction,
    template: Template,
    *,
    observation_status: str = "preliminary",
    default_tz: tzinfo = UTC,
    derived_from: Mapping[str, str] | None = None,
    check: bool = True,
) -> Resource:
    """The transaction Bundle for one report and template (R4 JSON, deterministic).

    `derived_from`: variable id -> `Observation/<id>` of the same finding in the patient's
    earlier report (timeline); it becomes `derivedFrom` on that variable's Observations.
    `check` False: the caller checks the Bundle itself once it is complete (the insights are
    added to it first, `workers.process`), so it is checked once.
    """
    if extraction.template_id != template.id:
        raise FhirMappingError("extraction and template do not match")
    links = dict(derived_from or {})
    known = {variable.id for variable in template.variables}
    for variable_id, reference in links.items():
        if variable_id not in known:
            raise FhirMappingError(f"derived_from names unknown variable {variable_id!r}")
        if not _OBSERVATION_REF.match(reference):
            raise FhirMappingError(f"derived_from of {variable_id} is not Observation/<id>")
    ctx = _Context(report, extraction, default_tz)
    places = observation_places(template, extraction.values)
    observations = [
        _observation(
            ctx, template, value, place, observation_status, links.get(value.variable_id),
            first_site=index == 0,
        )
        for value in extraction.values
        for index, place in enumerate(places.get(value.variable_id, []))
    ]  # fmt: skip
    observation_ids = [obs["id"] for obs in observations]
    resources = [
        _patient(ctx),
        _device(ctx),
        _diagnostic_report(ctx, observation_ids, is_normal_study(template, extraction)),
        *observations,
    ]
    if observations:
        resources.append(_provenance(ctx, observation_ids))
    entries = [
        {
            "fullUrl": f"urn:uuid:{resource['id']}",
            "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
        }
        for resource in resources
    ]
    bundle: Resource = {
        "resourceType": "Bundle",
        "id": deterministic_id("Bundle", ctx.facility, ctx.key, template.id),
        "type": "transaction",
        "entry": entries,
    }
    if check:
        check_bundle(bundle)  # the output check: an invalid Bundle never leaves
    return bundle
