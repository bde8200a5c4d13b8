"""Insights -> FHIR R4 resources in the report's transaction Bundle (issue 20).

`add_insights(bundle, report, insights, ...)` adds to a Bundle built by `mappings.fhir_out`:
- a `ServiceRequest` per follow-up: `status` draft, `intent` proposal, `code` with the DICOM
  modality (`http://dicom.nema.org/resources/ontology/DCM`, CID 29) when stated, the procedure
  code of `mappings.procedure_codes` (LOINC region + modality, else SNOMED CT) and the text,
  `occurrenceDateTime` (one due date) or `occurrencePeriod` (a range), `asNeededBoolean` true when
  conditional, `reasonReference` the DiagnosticReport and the RADS Observation of its sentence or
  the sentence before (the finding it is for), `supportingInfo` the DiagnosticReport, the
  guideline in `note`;
  no `requester`;
- a `Flag` per critical result: `status` active, category clinical, `code` the finding's
  concept from the critical list (SNOMED CT, when the list gives one) and its text,
  `subject` the patient, the `flag-detail` extension to the
  DiagnosticReport, `period.start` the report's effective time;
- a `Communication` per statement that the result was passed on: `status` completed, `subject`,
  `recipient` as `Reference.display`, `about` the DiagnosticReport, the time as written in `note`,
  `sent` when the sentence states one unambiguous date and clock time (in the offset of the
  report's effective time, within a day of it; a clock time alone is not a FHIR dateTime);
- an `Observation` per RADS category that no template Observation of the Bundle states already
  (`mappings.insights.stated_rads`: same system and category, evidence holding it; that
  Observation takes the verified codings it lacks and the follow-up's `reasonReference` names
  it): `code` text naming the system, `valueCodeableConcept.text`
  the category as the system writes it, with the SNOMED CT codings of `mappings.rads_codes`
  where verified (a mammogram's BI-RADS 0-5, breast density; the rest text only),
  `bodySite.text` the side when stated; listed in `DiagnosticReport.result`;
- an `Observation` per size of a finding that no template Observation of the Bundle states
  already (a size component with the same evidence offsets, or a number variable of the same
  millimetres whose evidence holds the size, "Midline shift (mm)": never the same fact twice): `code`
  text the finding phrase as written (no code is looked up), `valueCodeableConcept` Present
  (SNOMED `52101004`), the size `component`s of `mappings.fhir_components`; listed in
  `DiagnosticReport.result`;
- a `DetectedIssue` per mismatch with the order or the patient: `status` preliminary, `code` text
  naming the kind (no code system has laterality/sex/age/exam-type mismatches), `patient`,
  `identifiedDateTime` the report's effective time, `implicated` and `evidence.detail` the
  DiagnosticReport, `detail` both sides ("Order: left (XR KNEE LEFT); report: right").
Every resource carries the AIAST security label and the project's evidence extension (quote and
offsets, `stage` rules, `template` `insights|<version>`, `variable` the insight kind); the
Provenance of the Bundle targets them too. Ids are UUIDv5 of (sending facility, report key,
kind, what it says, its rank among equal ones), so re-extracting a report PUTs the same ids.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from mappings import terminology as term
from mappings.fhir_components import measurement_components, size_spans
from mappings.fhir_out import (
    EVIDENCE_EXTENSION,
    deterministic_id,
    evidence_offsets,
    fhir_datetime,
    report_key,
)
from mappings.insights.critical_list import CriticalFinding
from mappings.insights.model import Insights, SizedFinding, Span
from mappings.insights.stated_rads import adopt_codings, stated_rads
from mappings.output_check import check_bundle
from mappings.procedure_codes import procedure_codings
from mappings.rads_codes import rads_code_codings, rads_value_codings
from mappings.report import Report

INSIGHTS_VERSION = "1"
PRESENT = "52101004"
"""SNOMED CT Present (qualifier value), as the template Observations state presence."""
FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
RADS_CODE_TEXT = {
    "BI-RADS": "BI-RADS assessment category",
    "BI-RADS density": "BI-RADS breast density category",
    "Lung-RADS": "Lung-RADS category",
    "PI-RADS": "PI-RADS assessment category",
    "TI-RADS": "ACR TI-RADS level",
    "LI-RADS": "LI-RADS category",
    "O-RADS": "O-RADS category",
}
MISMATCH_CODE_TEXT = {
    "laterality": "Laterality mismatch between the order and the report",
    "sex": "Mismatch between the patient's sex and the report",
    "age": "Mismatch between the patient's age and the report",
    "exam_type": "Exam type mismatch between the order and the report",
}
MISMATCH_SIDES = {
    "laterality": ("Order", "report"),
    "sex": ("Patient's sex", "report describes"),
    "age": ("Patient's age", "report states"),
    "exam_type": ("Order", "report"),
}
Resource = dict[str, Any]


def _security() -> dict[str, Any]:
    return {"security": [term.coding(term.V3_OBSERVATION_VALUE, "AIAST")]}


def _evidence(span: Span, kind: str) -> dict[str, Any]:
    return {
        "url": EVIDENCE_EXTENSION,
        "extension": [
            {"url": "quote", "valueString": span.quote},
            {"url": "start", "valueInteger": span.start},
            {"url": "end", "valueInteger": span.end},
            {"url": "verified", "valueBoolean": True},
            {"url": "stage", "valueCode": "rules"},
            {"url": "template", "valueString": f"insights|{INSIGHTS_VERSION}"},
            {"url": "variable", "valueString": kind},
        ],
    }


class _Refs:
    """What the insight resources share with the Bundle they join."""

    def __init__(self, bundle: Resource, report: Report) -> None:
        by_type: dict[str, Resource] = {}
        for entry in bundle.get("entry", []):
            by_type.setdefault(entry["resource"]["resourceType"], entry["resource"])
        self.patient = f"Patient/{by_type['Patient']['id']}"
        self.report_resource = by_type["DiagnosticReport"]
        self.report = f"DiagnosticReport/{self.report_resource['id']}"
        self.effective: str = self.report_resource["effectiveDateTime"]
        self.device = f"Device/{by_type['Device']['id']}" if "Device" in by_type else None
        self.provenance = by_type.get("Provenance")
        self.facility = report.sending_facility
        self.modality = report.modality
        self.key = report_key(report)
        self._ranks: Counter[tuple[str, ...]] = Counter()

    def id(self, resource_type: str, *parts: str | None) -> str:
        """A deterministic id; equal parts get their rank appended (the 2nd CT follow-up)."""
        key = (resource_type, *(p or "" for p in parts))
        self._ranks[key] += 1
        return deterministic_id(
            resource_type, self.facility, self.key, "insights", *key[1:], str(self._ranks[key])
        )


_SENTENCE_END = re.compile(r"[.!?;](?=\s)")


def _finding_of(text: str, followup: Span, rads: Span) -> bool:
    """Whether a RADS category is the finding a follow-up is for: it lies in the follow-up's
    sentence or ends the sentence just before it on the same line ("Lung-RADS 4A. Recommend
    low-dose CT in 3 months.")."""
    if followup.start <= rads.start < followup.end:
        return True
    between = text[rads.end : followup.start]
    return (
        rads.end <= followup.start
        and "\n" not in between
        and len(_SENTENCE_END.findall(between)) <= 1
    )


def _service_requests(
    refs: _Refs, insights: Insights, rads_ids: list[str], text: str
) -> list[Resource]:
    resources = []
    for followup in insights.followups:
        reasons = [{"reference": refs.report}]
        reasons += [
            {"reference": f"Observation/{rads_id}"}
            for rads, rads_id in zip(insights.rads, rads_ids, strict=True)
            if _finding_of(text, followup.evidence, rads.evidence)
        ]
        code: dict[str, Any] = {"text": followup.procedure_text}
        codings = procedure_codings(
            followup.kind, followup.modality, followup.procedure_text, followup.evidence.quote
        )
        if followup.modality and term.is_known(term.DCM, followup.modality):
            codings.insert(0, term.coding(term.DCM, followup.modality))
        if codings:
            code["coding"] = codings
        resource: Resource = {
            "resourceType": "ServiceRequest",
            "id": refs.id("ServiceRequest", followup.kind, followup.modality),
            "meta": _security(),
            "extension": [_evidence(followup.evidence, f"followup.{followup.kind}")],
            "status": "draft",
            "intent": "proposal",
            "code": code,
            "subject": {"reference": refs.patient},
            "authoredOn": refs.effective,
            "reasonReference": reasons,
            "supportingInfo": [{"reference": refs.report}],
        }
        if followup.due is not None:
            resource["occurrenceDateTime"] = followup.due.isoformat()
        elif followup.due_start is not None and followup.due_end is not None:
            resource["occurrencePeriod"] = {
                "start": followup.due_start.isoformat(),
                "end": followup.due_end.isoformat(),
            }
        if followup.conditional:
            resource["asNeededBoolean"] = True
        if followup.guideline:
            resource["note"] = [{"text": f"Guideline: {followup.guideline}"}]
        resources.append(resource)
    return resources


def _flags(refs: _Refs, insights: Insights, findings: dict[str, CriticalFinding]) -> list[Resource]:
    resources = []
    for result in insights.critical:
        finding = findings.get(result.finding)
        label = finding.label if finding else result.finding
        code: dict[str, Any] = {"text": f"Critical result: {label}"}
        if finding is not None and finding.code is not None:
            concept = finding.code
            code["coding"] = [
                {"system": concept.system, "code": concept.code, "display": concept.display}
            ]
        resources.append(
            {
                "resourceType": "Flag",
                "id": refs.id("Flag", result.finding),
                "meta": _security(),
                "extension": [
                    {"url": FLAG_DETAIL, "valueReference": {"reference": refs.report}},
                    _evidence(result.evidence, "critical"),
                ],
                "status": "active",
                "category": [{"coding": [term.coding(term.FLAG_CATEGORY, "clinical")]}],
                "code": code,
                "subject": {"reference": refs.patient},
                "period": {"start": refs.effective},
            }
        )
    return resources


_SENT_DAYS = 1
"""A stated date at most this many days from the report's effective time takes its offset."""


def _sent(stated: datetime | None, effective: str) -> str | None:
    """A communication's `sent`: the stated local date and time with the offset of the report's
    effective time (None when no moment is stated, the effective time has no offset, or the
    dates lie apart: the offset may differ then)."""
    if stated is None:
        return None
    try:
        moment = datetime.fromisoformat(effective.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None or abs((stated.date() - moment.date()).days) > _SENT_DAYS:
        return None
    return fhir_datetime(stated.replace(tzinfo=moment.tzinfo))


def _communications(refs: _Refs, insights: Insights) -> list[Resource]:
    resources = []
    for communication in insights.communications:
        resource: Resource = {
            "resourceType": "Communication",
            "id": refs.id("Communication", communication.recipient),
            "meta": _security(),
            "extension": [_evidence(communication.evidence, "communication")],
            "status": "completed",
            "subject": {"reference": refs.patient},
            "about": [{"reference": refs.report}],
        }
        if communication.recipient:
            resource["recipient"] = [{"display": communication.recipient}]
        if communication.time:
            resource["note"] = [{"text": f"Time as stated: {communication.time}"}]
        if (sent := _sent(communication.sent, refs.effective)) is not None:
            resource["sent"] = sent
        resources.append(resource)
    return resources


def _rads_observations(
    refs: _Refs, insights: Insights, status: str, issued: str, stated: dict[int, str]
) -> list[Resource]:
    resources = []
    for index, rads in enumerate(insights.rads):
        if index in stated:  # a template Observation states it already
            continue
        resource: Resource = {
            "resourceType": "Observation",
            "id": refs.id("Observation", rads.system, rads.category, rads.side),
            "meta": _security(),
            "extension": [_evidence(rads.evidence, "rads")],
            "status": status,
            "category": [{"coding": [term.coding(term.OBSERVATION_CATEGORY, "imaging")]}],
            "code": {"text": RADS_CODE_TEXT.get(rads.system, rads.system)},
            "subject": {"reference": refs.patient},
            "effectiveDateTime": refs.effective,
            "issued": issued,
            "valueCodeableConcept": {"text": rads.category},
        }
        if codings := rads_code_codings(rads.system):
            resource["code"]["coding"] = codings
        if codings := rads_value_codings(rads.system, rads.category, refs.modality):
            resource["valueCodeableConcept"]["coding"] = codings
        if refs.device:
            resource["device"] = {"reference": refs.device}
        if rads.side:
            resource["bodySite"] = {"text": rads.side}
        resources.append(resource)
    return resources


Stated = tuple[set[tuple[int, int]], list[tuple[float, int, int]]]
_MM = {"mm": 1.0, "cm": 10.0}


def _template_sizes(bundle: Resource) -> Stated:
    """What the Bundle's template Observations state already: the offsets of their size
    components, and each number in mm ("Midline shift (mm)" 6) with its evidence's offsets."""
    spans: set[tuple[int, int]] = set()
    numbers: list[tuple[float, int, int]] = []
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        if resource["resourceType"] != "Observation":
            continue
        spans |= size_spans(resource.get("component") or [])
        quantity = resource.get("valueQuantity") or {}
        offsets = evidence_offsets(resource)
        if quantity.get("code") in _MM and "value" in quantity and offsets is not None:
            numbers.append((round(quantity["value"] * _MM[quantity["code"]], 2), *offsets))
    return spans, numbers


def _stated(sized: SizedFinding, stated: Stated) -> bool:
    """Whether a template Observation states this size: a size component with its offsets, or
    a number of the same millimetres whose evidence holds it."""
    spans, numbers = stated
    start, end = sized.size.evidence.start, sized.size.evidence.end
    if start is None or end is None:
        return False
    if (start, end) in spans:
        return True
    return len(sized.size.dims) == 1 and any(
        value == sized.size.dims_mm[0] and low <= start and end <= high
        for value, low, high in numbers
    )


_SENTENCE_END = re.compile(r"[.;!?](?:\s|$)|\n\s*\n")
_NEAR = 60  # characters between a finding's mention and its size in one sentence


def _quote(resource: Resource) -> str:
    for extension in resource.get("extension") or []:
        if extension.get("url") == EVIDENCE_EXTENSION:
            for part in extension.get("extension") or []:
                if part.get("url") == "quote":
                    return str(part.get("valueString") or "")
    return ""


def _finding_observation(bundle: Resource, sized: SizedFinding, text: str) -> Resource | None:
    """The template Observation of the finding this size measures, if the Bundle has one: a
    present finding whose evidence names the size's finding phrase (or is named by it), in the
    same sentence, next to the size — the nearest; its components take the size."""
    start, end = sized.size.evidence.start, sized.size.evidence.end
    phrase = sized.finding.casefold()
    if start is None or end is None or not phrase:
        return None
    best: tuple[int, Resource] | None = None
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        offsets = evidence_offsets(resource)
        codings = (resource.get("valueCodeableConcept") or {}).get("coding") or []
        if (
            resource["resourceType"] != "Observation"
            or offsets is None
            or not any(c.get("code") == PRESENT for c in codings)
        ):
            continue
        quote = _quote(resource).casefold()
        if not quote or (quote not in phrase and phrase not in quote):
            continue
        if offsets[1] <= start:
            gap = text[offsets[1] : start]  # "pneumothorax, about 2 cm"
        elif end <= offsets[0]:
            gap = text[end : offsets[0]]  # "a 9 mm nodule"
        else:
            gap = ""
        distance = len(gap)
        if distance > _NEAR or _SENTENCE_END.search(gap):
            continue
        if best is None or distance < best[0]:
            best = (distance, resource)
    return best[1] if best else None


def _size_observations(
    bundle: Resource,
    refs: _Refs,
    insights: Insights,
    text: str,
    status: str,
    issued: str,
) -> list[Resource]:
    """Size Observations of the findings no template Observation holds; a size of a template
    finding (one without a size attribute, e.g. "pneumothorax, about 2 cm") becomes a component
    of that finding's Observation instead (never the same finding twice)."""
    stated = _template_sizes(bundle)
    resources = []
    present = term.require(term.SNOMED, PRESENT)
    for sized in insights.sizes:
        if _stated(sized, stated):
            continue
        finding = _finding_observation(bundle, sized, text)
        if finding is not None:
            finding.setdefault("component", []).extend(
                measurement_components((sized.size,), EVIDENCE_EXTENSION)
            )
            continue
        resource: Resource = {
            "resourceType": "Observation",
            "id": refs.id(
                "Observation", "size", sized.finding, "x".join(map(str, sized.size.dims))
            ),
            "meta": _security(),
            "extension": [_evidence(sized.evidence, "size")],
            "status": status,
            "category": [{"coding": [term.coding(term.OBSERVATION_CATEGORY, "imaging")]}],
            "code": {"text": sized.finding},
            "subject": {"reference": refs.patient},
            "effectiveDateTime": refs.effective,
            "issued": issued,
            "valueCodeableConcept": {
                "coding": [{"system": term.SNOMED, "code": PRESENT, "display": present.display}],
                "text": "Present",
            },
            "component": measurement_components((sized.size,), EVIDENCE_EXTENSION),
        }
        if refs.device:
            resource["device"] = {"reference": refs.device}
        resources.append(resource)
    return resources


def _detected_issues(refs: _Refs, insights: Insights) -> list[Resource]:
    resources = []
    for mismatch in insights.mismatches:
        ours, theirs = MISMATCH_SIDES[mismatch.kind]
        resources.append(
            {
                "resourceType": "DetectedIssue",
                "id": refs.id("DetectedIssue", mismatch.kind),
                "meta": _security(),
                "extension": [_evidence(mismatch.evidence, f"mismatch.{mismatch.kind}")],
                "status": "preliminary",
                "code": {"text": MISMATCH_CODE_TEXT[mismatch.kind]},
                "patient": {"reference": refs.patient},
                "identifiedDateTime": refs.effective,
                "implicated": [{"reference": refs.report}],
                "evidence": [{"detail": [{"reference": refs.report}]}],
                "detail": f"{ours}: {mismatch.expected}; {theirs}: {mismatch.found}",
            }
        )
    return resources


def _resource(bundle: Resource, resource_id: str) -> Resource:
    return next(e["resource"] for e in bundle["entry"] if e["resource"].get("id") == resource_id)


def insight_resources(
    bundle: Resource,
    report: Report,
    insights: Insights,
    *,
    findings: tuple[CriticalFinding, ...] = (),
    observation_status: str = "preliminary",
    created: datetime | None = None,
) -> list[Resource]:
    """The resources `insights` adds to `bundle` (a radbridge Bundle of `report`)."""
    refs = _Refs(bundle, report)
    issued = fhir_datetime((created or datetime.now(UTC)).astimezone(UTC))
    stated = stated_rads(bundle, insights.rads)
    for index, observation_id in stated.items():  # its verified codings join the template's
        category = insights.rads[index]
        adopt_codings(
            _resource(bundle, observation_id),
            rads_code_codings(category.system),
            rads_value_codings(category.system, category.category, refs.modality),
        )
    rads = _rads_observations(refs, insights, observation_status, issued, stated)
    ids = iter(r["id"] for r in rads)
    rads_ids = [stated[i] if i in stated else next(ids) for i in range(len(insights.rads))]
    sizes = _size_observations(bundle, refs, insights, report.text, observation_status, issued)
    return [
        *rads,
        *sizes,
        *_service_requests(refs, insights, rads_ids, report.text),
        *_flags(refs, insights, {f.id: f for f in findings}),
        *_communications(refs, insights),
        *_detected_issues(refs, insights),
    ]


def add_insights(
    bundle: Resource,
    report: Report,
    insights: Insights,
    *,
    findings: tuple[CriticalFinding, ...] = (),
    observation_status: str = "preliminary",
    created: datetime | None = None,
    check: bool = True,
) -> Resource:
    """`bundle` with the insight resources added (the DiagnosticReport lists the RADS
    Observations, the Provenance targets every insight resource), checked again (`check`
    False: the caller checks the complete Bundle once)."""
    if insights.empty():
        return bundle
    resources = insight_resources(
        bundle,
        report,
        insights,
        findings=findings,
        observation_status=observation_status,
        created=created,
    )
    refs = _Refs(bundle, report)
    references = [f"{r['resourceType']}/{r['id']}" for r in resources]
    observations = [ref for ref in references if ref.startswith("Observation/")]
    if observations:
        result = refs.report_resource.setdefault("result", [])
        result.extend({"reference": ref} for ref in observations)
    entries = bundle["entry"]
    if refs.provenance is not None:
        refs.provenance["target"].extend({"reference": ref} for ref in references)
    elif refs.device is not None:
        entries.append(_entry(_provenance(refs, references, created)))
    entries.extend(_entry(resource) for resource in resources)
    if check:
        check_bundle(bundle)
    return bundle


def _provenance(refs: _Refs, references: list[str], created: datetime | None) -> Resource:
    return {
        "resourceType": "Provenance",
        "id": deterministic_id("Provenance", refs.facility, refs.key, "insights"),
        "meta": _security(),
        "target": [{"reference": ref} for ref in references],
        "recorded": fhir_datetime((created or datetime.now(UTC)).astimezone(UTC)),
        "agent": [
            {
                "type": {"coding": [term.coding(term.PROVENANCE_PARTICIPANT_TYPE, "assembler")]},
                "who": {"reference": refs.device},
            }
        ],
        "entity": [{"role": "source", "what": {"reference": refs.report}}],
    }


def _entry(resource: Resource) -> Resource:
    return {
        "fullUrl": f"urn:uuid:{resource['id']}",
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
    }
