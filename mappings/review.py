"""Clinician review of AI-extracted Observations: accept, correct or reject (pure).

A decision turns the stored (preliminary) Observation into its next version and adds a
`Provenance` that records the human verification:

- accept  -> `status: final`, value unchanged;
- correct -> the corrected value (status, option, number or location from the template's own
  options, checked here), `status: final`, and the AI's value kept in the evidence extension as
  the sub-extension `ai-value` (and `ai-body-site` when the location changed);
- reject  -> `status: entered-in-error`;
- undo    -> a decided (final / entered-in-error) Observation gets the version it was decided
  on back (`status: preliminary`, the AI's value) as its next version, and awaits review again.

Report-level insights (issue 20) are accepted or rejected (`review_insight`), each resource type
by its row of `INSIGHT_REVIEWS`: a follow-up `ServiceRequest` draft -> active on accept; an
accepted `DetectedIssue` -> final; a rejected `ServiceRequest`, `Flag`, `Communication` or
`DetectedIssue` -> entered-in-error (RADS categories are Observations, reviewed as above). An
insight decision is undone like a value's: the version it was made on (awaiting review: a
`ServiceRequest` draft again, a rejected one back from entered-in-error) is its next version,
with an UNDO Provenance.

The `AIAST` security label stays on every version (the value was AI-asserted first). The
Provenance targets the new version (`<type>/<id>/_history/<vid>`), names the reviewing
`Practitioner` as `verifier`, is `recorded` at the decision time and has the verify activity.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mappings.errors import MappingError
from mappings.fhir_components import code_concept, is_size_component
from mappings.fhir_grades import is_grade_component
from mappings.fhir_out import (
    EVIDENCE_EXTENSION,
    _value_elements,
    deterministic_id,
    fhir_datetime,
)
from mappings.output_check import checked
from mappings.report import FindingStatus, FindingValue, Stage
from mappings.template import Template, Variable, VariableType

# Provenance.activity (R4 binding ProvenanceActivityType, extensible). Two codings of the one
# "verify" concept:
# - v3-ParticipationType VRF (verifier) is in the R4 (4.0.1) expansion of
#   http://hl7.org/fhir/ValueSet/provenance-activity-type, so the extensible binding is met:
#   fhir-crucible/fhir_models lib/fhir_models/r4/generated/resources/Provenance.rb
#   (commit 07217016e206aea45b044946b5089a3b2173dbd7, `activity` valid_codes, generated from R4),
#   and the cross-version set hl7.fhir.uv.xver-r4.r4b R4-provenance-activity-type-for-R4B
#   (code systems v3-ActCode, v3-DataOperation, v3-ParticipationType).
# - ISO 21089 lifecycle `verify`, the code later FHIR versions bind (hl7.org/fhir/6.0.0-ballot4
#   valueset-provenance-activity-type: iso-21089-lifecycle amend, originate, ..., verify).
# `text` is VERIFY (the API contract's activity name).
ISO_21089_LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
V3_PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
VERIFY_ACTIVITY: dict[str, Any] = {
    "coding": [
        {"system": ISO_21089_LIFECYCLE, "code": "verify"},
        {"system": V3_PARTICIPATION_TYPE, "code": "VRF"},
    ],
    "text": "VERIFY",
}
# Provenance.agent.type: provenance-participant-type `verifier` (R4 provenance-agent-type value
# set; same fhir_models file, Agent `type` valid_codes: enterer, performer, author, verifier, ...)
PROVENANCE_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
VERIFIER_TYPE: dict[str, Any] = {
    "coding": [{"system": PROVENANCE_PARTICIPANT_TYPE, "code": "verifier", "display": "Verifier"}]
}
PRESENCE_CHOICES = (FindingStatus.PRESENT, FindingStatus.ABSENT, FindingStatus.UNCERTAIN)
_VALUE_KEYS = ("valueCodeableConcept", "valueInteger", "valueQuantity", "valueString")


class ReviewRefused(MappingError):
    """A review decision that cannot be applied (unknown decision, a correction outside the
    template's options, an Observation that is not awaiting review)."""

    http_status = 422
    issue_code = "business-rule"


class ReviewConflict(ReviewRefused):
    """The Observation changed since the reviewer loaded it (optimistic concurrency)."""

    http_status = 409
    issue_code = "conflict"


class Decision(StrEnum):
    """What a reviewer decided about one Observation."""

    ACCEPT = "accept"
    CORRECT = "correct"
    REJECT = "reject"
    UNDO = "undo"


@dataclass(frozen=True)
class Correction:
    """A corrected value: `status` (presence variables), `value` (option id, integer or number
    as text) and `location` (a template location id; "" clears it)."""

    status: str | None = None
    value: str | None = None
    location: str | None = None


@dataclass(frozen=True)
class Reviewer:
    """The person who decided (a UI user name, never a patient's)."""

    username: str

    @property
    def practitioner_id(self) -> str:
        """A stable Practitioner id for this user name."""
        return deterministic_id("Practitioner", self.username)

    @property
    def reference(self) -> dict[str, str]:
        """The `Reference(Practitioner)` of this reviewer."""
        return {"reference": f"Practitioner/{self.practitioner_id}", "display": self.username}


@dataclass(frozen=True)
class CorrectionField:
    """What the UI may offer to correct a variable: `kind` is `choice` (ids and labels in
    `choices`), `integer` (within `low`..`high`) or `number` (within the template's range)."""

    kind: str
    choices: tuple[tuple[str, str], ...] = ()
    low: float | None = None
    high: float | None = None
    unit: str | None = None
    locations: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class InsightReview:
    """How a decision changes one insight resource type: `kind` names it on the page, a
    decision may be made on a version whose status is in `awaiting`, accept sets `accepted`,
    reject sets `rejected`."""

    kind: str
    awaiting: tuple[str, ...]
    accepted: str
    rejected: str = "entered-in-error"


# One row per reviewable insight resource type (a new insight type is one row here).
INSIGHT_REVIEWS: dict[str, InsightReview] = {
    "Flag": InsightReview("Critical result", ("active",), "active"),
    "DetectedIssue": InsightReview("Mismatch", ("preliminary",), "final"),
    "ServiceRequest": InsightReview("Follow-up", ("draft",), "active"),
    "Communication": InsightReview("Result communicated", ("completed",), "completed"),
}


@dataclass(frozen=True)
class ReviewResult:
    """The next version of the reviewed resource (an Observation or an insight; the field keeps
    its first name) and the Provenance that records the decision."""

    observation: dict[str, Any]
    provenance: dict[str, Any]


def evidence(observation: dict[str, Any]) -> dict[str, list[Any]]:
    """The evidence extension's sub-extension values by url (repeated ones in order)."""
    found: dict[str, list[Any]] = {}
    for extension in observation.get("extension") or []:
        if extension.get("url") != EVIDENCE_EXTENSION:
            continue
        for sub in extension.get("extension") or []:
            value = next((v for k, v in sub.items() if k.startswith("value")), None)
            found.setdefault(str(sub.get("url")), []).append(value)
    return found


def template_of(observation: dict[str, Any]) -> tuple[str, str] | None:
    """(template id, variable id) from the evidence extension, or None."""
    subs = evidence(observation)
    template = (subs.get("template") or [None])[0]
    variable = (subs.get("variable") or [None])[0]
    if not isinstance(template, str) or not isinstance(variable, str):
        return None
    return template.split("|", 1)[0], variable


def correction_field(template: Template, variable: Variable) -> CorrectionField:
    """The options a correction of `variable` may take (only the template's own)."""
    sites: dict[str, str] = {}  # one site per Observation: expanding locations give their sites
    for location_id in variable.locations:
        for site in template.sites(location_id):
            sites.setdefault(site.id, site.label)
    locations = tuple(sites.items())
    if variable.type is VariableType.PRESENCE:
        choices = tuple((status.value, status.value) for status in PRESENCE_CHOICES)
        return CorrectionField("choice", choices, locations=locations)
    if variable.type is VariableType.ENUM:
        return CorrectionField("choice", tuple((o.id, o.label) for o in variable.options))
    if variable.type is VariableType.ORDINAL:
        assert variable.scale is not None  # checked when the template was loaded
        return CorrectionField(
            "integer", low=variable.scale.min, high=variable.scale.max, locations=locations
        )
    unit = variable.unit.code if variable.unit else None
    low = variable.range.min if variable.range else None
    high = variable.range.max if variable.range else None
    return CorrectionField("number", low=low, high=high, unit=unit)


def _corrected_value(
    variable: Variable, spec: CorrectionField, correction: Correction
) -> FindingValue:
    """The FindingValue of a correction, refused (ReviewRefused) outside the options."""
    raw = (correction.value or correction.status or "").strip()
    location = (correction.location or "").strip()
    if location and location not in {loc_id for loc_id, _ in spec.locations}:
        raise ReviewRefused(f"location {location!r} is not an option of {variable.id}")
    locations = (location,) if location else ()
    if variable.type is VariableType.PRESENCE:
        if raw not in {status.value for status in PRESENCE_CHOICES}:
            raise ReviewRefused(f"{raw!r} is not an option of {variable.id}")
        status = FindingStatus(raw)
        return FindingValue(
            variable_id=variable.id, status=status, locations=locations, stage=Stage.RULES
        )
    if variable.type is VariableType.ENUM:
        if raw not in {option_id for option_id, _ in spec.choices}:
            raise ReviewRefused(f"{raw!r} is not an option of {variable.id}")
        return FindingValue(
            variable_id=variable.id, status=FindingStatus.PRESENT, value=raw, stage=Stage.RULES
        )
    try:
        number = float(raw)
    except ValueError:
        raise ReviewRefused(f"{variable.id} needs a number") from None
    if not math.isfinite(number):
        raise ReviewRefused(f"{variable.id} needs a finite number")
    if spec.kind == "integer" and not number.is_integer():
        raise ReviewRefused(f"{variable.id} needs a whole number")
    if (spec.low is not None and number < spec.low) or (
        spec.high is not None and number > spec.high
    ):
        raise ReviewRefused(f"{variable.id} must be from {spec.low:g} to {spec.high:g}")
    value: int | float = int(number) if spec.kind == "integer" else number
    return FindingValue(
        variable_id=variable.id,
        status=FindingStatus.PRESENT,
        value=value,
        unit=spec.unit,
        locations=locations,
        stage=Stage.RULES,
    )


def _with_ai_value(observation: dict[str, Any], old: dict[str, Any]) -> None:
    """Keep the AI's value (and body site when it changed) in the evidence extension."""
    subs: list[dict[str, Any]] = []
    for key in _VALUE_KEYS:
        if key in old:
            subs.append({"url": "ai-value", key: old[key]})
    if "bodySite" in old and old.get("bodySite") != observation.get("bodySite"):
        subs.append({"url": "ai-body-site", "valueCodeableConcept": old["bodySite"]})
    for extension in observation.get("extension") or []:
        if extension.get("url") == EVIDENCE_EXTENSION:
            kept = [s for s in extension.get("extension") or [] if not s["url"].startswith("ai-")]
            extension["extension"] = kept + subs
            return
    observation.setdefault("extension", []).append({"url": EVIDENCE_EXTENSION, "extension": subs})


def review_provenance_id(observation_id: str, version: int) -> str:
    """The id of the Provenance of the decision that made `version` of an Observation: the
    store knows a reviewed version by it (a re-extraction of the same report keeps it)."""
    return deterministic_id("Provenance", "review", observation_id, str(version))


def undo_provenance_id(observation_id: str, version: int) -> str:
    """The id of the Provenance of an undo that made `version`: not a decision's id, so a
    re-extraction treats the value as awaiting review again."""
    return deterministic_id("Provenance", "review-undo", observation_id, str(version))


UNDO_ACTIVITY: dict[str, Any] = {"text": "UNDO"}  # text only: no code system names an undo


def _undone(observation: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The version a decision was made on, to be stored again (ReviewRefused when the
    Observation is not decided or `previous` is not the preliminary version before it)."""
    if observation.get("status") not in ("final", "entered-in-error"):
        raise ReviewRefused(
            f"Observation is {observation.get('status')}: only a decision can be undone"
        )
    if (
        previous is None
        or previous.get("id") != observation.get("id")
        or previous.get("status") != "preliminary"
    ):
        raise ReviewRefused("the version before the decision is not a value awaiting review")
    return copy.deepcopy(previous)


def review(
    observation: dict[str, Any],
    template: Template | None,
    decision: Decision,
    reviewer: Reviewer,
    *,
    new_version: int,
    correction: Correction | None = None,
    recorded: datetime | None = None,
    report: str | None = None,
    previous: dict[str, Any] | None = None,
) -> ReviewResult:
    """Apply one decision to a stored Observation (version `new_version - 1`); returns its next
    version (`meta.versionId` = `new_version`) and the Provenance (`report`: the
    `DiagnosticReport/<id>` the value was read from, a `source` entity). ReviewRefused when the
    Observation is not awaiting review or the correction is outside the template's options.
    UNDO takes `previous`, the version the decision was made on (`new_version - 2`)."""
    if observation.get("resourceType") != "Observation":
        raise ReviewRefused("only Observations are reviewed")
    if decision is Decision.UNDO:
        restored = _undone(observation, previous)
        return _undo(observation, restored, reviewer, new_version, recorded, report)
    if observation.get("status") != "preliminary":
        raise ReviewRefused(
            f"Observation is {observation.get('status')}, not awaiting review (preliminary)"
        )
    new = copy.deepcopy(observation)
    meta = {k: v for k, v in (new.get("meta") or {}).items() if k not in ("lastUpdated",)}
    meta["versionId"] = str(new_version)
    new["meta"] = meta  # `security` (AIAST) stays
    if decision is Decision.REJECT:
        new["status"] = "entered-in-error"
    elif decision is Decision.ACCEPT:
        new["status"] = "final"
    else:
        if template is None:
            raise ReviewRefused("the Observation names no known template: it cannot be corrected")
        ids = template_of(observation)
        if ids is None:
            raise ReviewRefused("the Observation has no evidence extension naming its variable")
        try:
            variable = template.variable(ids[1])
        except KeyError:
            raise ReviewRefused(f"variable {ids[1]!r} is not in template {template.id}") from None
        value = _corrected_value(
            variable, correction_field(template, variable), correction or Correction()
        )
        for key in _VALUE_KEYS:
            new.pop(key, None)
        elements = _value_elements(value, variable)
        if variable.type is VariableType.PRESENCE and "component" in observation:
            elements.pop("component", None)  # the qualifier is not corrected here: keep it
            if value.status not in (FindingStatus.PRESENT, FindingStatus.UNCERTAIN):
                kept = [
                    c
                    for c in new["component"]
                    if not is_size_component(c) and not is_grade_component(c)
                ]
                new.pop("component")
                if kept:
                    new["component"] = kept  # an absent finding has no size nor grade
        new.update(elements)
        new.pop("bodySite", None)
        if value.locations:
            site = template.location(value.locations[0])
            new["bodySite"] = code_concept(site.code, site.label)
        elif "bodySite" in observation and correction and correction.location is None:
            new["bodySite"] = observation["bodySite"]  # location not part of this correction
        new["status"] = "final"
        _with_ai_value(new, observation)
    provenance = _provenance(
        str(observation["id"]),
        review_provenance_id(str(observation["id"]), new_version),
        VERIFY_ACTIVITY,
        reviewer,
        new_version,
        recorded,
        decision,
        report,
    )
    return ReviewResult(observation=checked(new), provenance=checked(provenance))


def _undo(
    observation: dict[str, Any],
    restored: dict[str, Any],
    reviewer: Reviewer,
    new_version: int,
    recorded: datetime | None,
    report: str | None,
) -> ReviewResult:
    """The restored version awaiting review as version `new_version`, and its Provenance (an
    Observation or an insight: the resource type is the resource's own)."""
    resource_type = str(observation.get("resourceType") or "Observation")
    meta = {k: v for k, v in (restored.get("meta") or {}).items() if k != "lastUpdated"}
    meta["versionId"] = str(new_version)
    restored["meta"] = meta
    observation_id = str(observation["id"])
    provenance = _provenance(
        observation_id,
        undo_provenance_id(observation_id, new_version),
        UNDO_ACTIVITY,
        reviewer,
        new_version,
        recorded,
        Decision.UNDO,
        report,
        resource_type,
    )
    provenance["entity"].append(  # the version whose value comes back
        {
            "role": "revision",
            "what": {"reference": f"{resource_type}/{observation_id}/_history/{new_version - 2}"},
        }
    )
    return ReviewResult(observation=checked(restored), provenance=checked(provenance))


def _provenance(
    observation_id: str,
    provenance_id: str,
    activity: dict[str, Any],
    reviewer: Reviewer,
    new_version: int,
    recorded: datetime | None,
    decision: Decision,
    report: str | None,
    resource_type: str = "Observation",
) -> dict[str, Any]:
    """The Provenance of a decision (or an undo) that made `new_version`."""
    moment = (recorded or datetime.now(UTC)).astimezone(UTC)
    target = f"{resource_type}/{observation_id}/_history/{new_version}"
    return {
        "resourceType": "Provenance",
        "id": provenance_id,
        "target": [{"reference": target}],
        "recorded": fhir_datetime(moment),
        "activity": activity,
        "agent": [{"type": VERIFIER_TYPE, "who": reviewer.reference}],
        "entity": [
            {
                "role": "revision",
                "what": {
                    "reference": f"{resource_type}/{observation_id}/_history/{new_version - 1}"
                },
            },
            *([{"role": "source", "what": {"reference": report}}] if report else []),
        ],
        "reason": [{"text": decision.value}],
    }


def _undone_insight(
    resource: dict[str, Any],
    rule: InsightReview,
    decided: bool,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """The version an insight decision was made on, to be stored again (ReviewRefused when the
    current version is no decision or `previous` did not await review)."""
    resource_type = str(resource.get("resourceType"))
    if not decided or resource.get("status") not in (rule.accepted, rule.rejected):
        raise ReviewRefused(
            f"{resource_type} is {resource.get('status')}: only a decision can be undone"
        )
    if (
        previous is None
        or previous.get("id") != resource.get("id")
        or previous.get("resourceType") != resource_type
        or previous.get("status") not in rule.awaiting
    ):
        raise ReviewRefused("the version before the decision is not an insight awaiting review")
    return copy.deepcopy(previous)


def review_insight(
    resource: dict[str, Any],
    decision: Decision,
    reviewer: Reviewer,
    *,
    new_version: int,
    decided: bool = False,
    recorded: datetime | None = None,
    report: str | None = None,
    previous: dict[str, Any] | None = None,
) -> ReviewResult:
    """Accept or reject one stored insight (version `new_version - 1`; `decided`: that version
    is already a reviewer's decision) by its row of `INSIGHT_REVIEWS`, or undo a decision
    (`previous`: the version it was made on, `new_version - 2`); returns its next version and
    the Provenance. ReviewRefused for another type or decision, a decided insight, or an undo of
    a version that is no decision."""
    resource_type = str(resource.get("resourceType"))
    rule = INSIGHT_REVIEWS.get(resource_type)
    if rule is None:
        raise ReviewRefused(f"a {resource_type} is not a reviewable insight")
    if decision is Decision.UNDO:
        restored = _undone_insight(resource, rule, decided, previous)
        return _undo(resource, restored, reviewer, new_version, recorded, report)
    if decision not in (Decision.ACCEPT, Decision.REJECT):
        raise ReviewRefused("an insight is accepted or rejected, or its decision undone")
    status = resource.get("status")
    if decided or status not in rule.awaiting:
        raise ReviewRefused(f"{resource_type} is {status}: it is not awaiting review")
    new = copy.deepcopy(resource)
    meta = {k: v for k, v in (new.get("meta") or {}).items() if k != "lastUpdated"}
    meta["versionId"] = str(new_version)
    new["meta"] = meta  # `security` (AIAST) stays
    new["status"] = rule.accepted if decision is Decision.ACCEPT else rule.rejected
    provenance = _provenance(
        str(resource["id"]),
        review_provenance_id(str(resource["id"]), new_version),
        VERIFY_ACTIVITY,
        reviewer,
        new_version,
        recorded,
        decision,
        report,
        resource_type,
    )
    return ReviewResult(observation=checked(new), provenance=checked(provenance))


def bundle_with_review(bundle: dict[str, Any], result: ReviewResult) -> dict[str, Any]:
    """The report's transaction Bundle carrying a decision: the Observation's entry holds its
    new version (PUT, same id) and the decision's Provenance is added. Delivering it sends the
    report's current state, so deliveries in any order never undo a later decision."""
    observation = {**result.observation, "meta": dict(result.observation.get("meta") or {})}
    observation["meta"].pop("versionId", None)  # the EHR keeps its own versions
    provenance = result.provenance
    entries = []
    for entry in bundle.get("entry", []):
        resource = entry.get("resource") or {}
        key = (resource.get("resourceType"), resource.get("id"))
        if key == ("Provenance", provenance["id"]):
            continue
        if key == (observation["resourceType"], observation["id"]):
            entry = {**entry, "resource": observation}
        entries.append(entry)
    entries.append(
        {
            "fullUrl": f"urn:uuid:{provenance['id']}",
            "resource": provenance,
            "request": {"method": "PUT", "url": f"Provenance/{provenance['id']}"},
        }
    )
    return {**bundle, "entry": entries}
