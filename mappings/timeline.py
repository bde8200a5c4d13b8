"""The per-patient timeline (docs/architecture.md, step 10 of the way of one message): link each report's Observation
of a finding to the same finding's Observation in the patient's most recent earlier report.

The link goes to `Observation.derivedFrom` (`mappings.fhir_out.build_bundle(derived_from=...)`):
`{variable_id: "Observation/<id>"}`. Nothing else changes: the episode of a finding comes from
the report's own text only, never from the earlier report.

- Patient: the first patient identifier (`system` or `assigner`, and `value`) with the sending
  facility, as the Bundle's Patient id is made; a report without identifiers has no timeline.
- Order: `Report.observation_time` (a naive time is read in `default_tz`); a report without one
  is neither linked nor linked to, and reports at the same moment are not linked to each other.
- Finding: the same template id (any version) and variable id; every emitted value counts
  (present, absent or uncertain: not_mentioned gives no Observation). A variable with several
  sites links to the earlier Observation of its first site.

Two sources, one rule: `link_reports` for the reports of one run (`radbridge extract`; the ids
are recomputed, as they are deterministic) and `link_stored` for Observations already in the
store (the service).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from mappings.fhir_out import EVIDENCE_EXTENSION, deterministic_id, observation_references
from mappings.report import Extraction, FindingStatus, FindingValue, Report
from mappings.template import Template


@dataclass(frozen=True)
class TimelineEntry:
    """One report with one template's extraction of it."""

    report: Report
    extraction: Extraction
    template: Template


@dataclass(frozen=True)
class PriorObservation:
    """An emitted Observation as the timeline sees it."""

    template_id: str
    variable_id: str
    reference: str
    effective: datetime


def patient_reference(report: Report) -> str | None:
    """`Patient/<id>` as the Bundle names the patient, or None without a patient identifier."""
    if not report.patient_identifiers:
        return None
    first = report.patient_identifiers[0]
    key = f"{first.system or first.assigner or ''}|{first.value}"
    return f"Patient/{deterministic_id('Patient', report.sending_facility, key)}"


def observation_reference(
    report: Report,
    template: Template,
    value: FindingValue,
    among: Sequence[FindingValue] | None = None,
) -> str | None:
    """`Observation/<id>` of the (first) Observation the Bundle emits for `value`, or None
    (`among`: the extraction's values, as `build_bundle` sees them)."""
    references = observation_references(report, template, value, among)
    return references[0] if references else None


def _aware(moment: datetime, default_tz: tzinfo) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=default_tz)


def priors_of(entry: TimelineEntry, default_tz: tzinfo = UTC) -> list[PriorObservation]:
    """The Observations one extraction gives the timeline (none without an observation time)."""
    if entry.report.observation_time is None:
        return []
    effective = _aware(entry.report.observation_time, default_tz)
    priors: list[PriorObservation] = []
    for value in entry.extraction.values:
        reference = observation_reference(
            entry.report, entry.template, value, entry.extraction.values
        )
        if reference is not None:
            priors.append(
                PriorObservation(entry.template.id, value.variable_id, reference, effective)
            )
    return priors


def prior_from_resource(resource: Mapping[str, Any]) -> PriorObservation | None:
    """A stored radbridge Observation as a timeline point (None when it is not one)."""
    if resource.get("resourceType") != "Observation" or not resource.get("id"):
        return None
    effective = resource.get("effectiveDateTime")
    if not isinstance(effective, str):
        return None
    try:
        moment = datetime.fromisoformat(effective)
    except ValueError:
        return None
    subs: dict[str, str] = {}
    for extension in resource.get("extension") or []:
        if extension.get("url") == EVIDENCE_EXTENSION:
            for sub in extension.get("extension") or []:
                if "valueString" in sub:
                    subs.setdefault(str(sub.get("url")), str(sub["valueString"]))
    template, variable = subs.get("template"), subs.get("variable")
    if not template or not variable:
        return None
    return PriorObservation(
        template.split("|", 1)[0],
        variable,
        f"Observation/{resource['id']}",
        _aware(moment, UTC),
    )


def derived_from(
    priors: Iterable[PriorObservation],
    template_id: str,
    variable_ids: Iterable[str],
    before: datetime,
) -> dict[str, str]:
    """Per variable, the most recent prior Observation strictly before `before`."""
    wanted = set(variable_ids)
    best: dict[str, PriorObservation] = {}
    for prior in priors:
        if prior.template_id != template_id or prior.variable_id not in wanted:
            continue
        if prior.effective >= before:
            continue
        current = best.get(prior.variable_id)
        if current is None or (prior.effective, prior.reference) > (
            current.effective,
            current.reference,
        ):
            best[prior.variable_id] = prior
    return {variable_id: prior.reference for variable_id, prior in sorted(best.items())}


def _emitted(extraction: Extraction) -> list[str]:
    return [v.variable_id for v in extraction.values if v.status is not FindingStatus.NOT_MENTIONED]


def link_reports(
    entries: Sequence[TimelineEntry], default_tz: tzinfo = UTC
) -> list[dict[str, str]]:
    """For each entry (same order), its `derived_from` among the entries of the same patient.

    `derived_from`'s rule, with each finding's earlier Observations sorted once per patient, so
    a patient's thousands of reports cost a binary search each, not a scan of all the others."""
    by_patient: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        patient = patient_reference(entry.report)
        if patient is not None and entry.report.observation_time is not None:
            by_patient.setdefault(patient, []).append(index)
    links: list[dict[str, str]] = [{} for _ in entries]
    for indices in by_patient.values():
        if len(indices) < 2:
            continue  # a report's own Observations are never earlier than itself
        points: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
        for index in indices:
            for prior in priors_of(entries[index], default_tz):
                key = (prior.template_id, prior.variable_id)
                points.setdefault(key, []).append((prior.effective, prior.reference))
        for series in points.values():
            series.sort()
        for index in indices:
            entry = entries[index]
            assert entry.report.observation_time is not None
            before = _aware(entry.report.observation_time, default_tz)
            found: dict[str, str] = {}
            for variable_id in sorted(set(_emitted(entry.extraction))):
                series = points.get((entry.template.id, variable_id), [])
                position = bisect.bisect_left(series, (before,))  # the first not before
                if position:
                    found[variable_id] = series[position - 1][1]
            links[index] = found
    return links


def link_stored(
    entry: TimelineEntry, stored: Iterable[Mapping[str, Any]], default_tz: tzinfo = UTC
) -> dict[str, str]:
    """`derived_from` for one report from the patient's stored Observations (the service)."""
    patient = patient_reference(entry.report)
    if patient is None or entry.report.observation_time is None:
        return {}
    mine = (r for r in stored if (r.get("subject") or {}).get("reference") == patient)
    priors = [p for p in (prior_from_resource(r) for r in mine) if p is not None]
    return derived_from(
        priors,
        entry.template.id,
        _emitted(entry.extraction),
        _aware(entry.report.observation_time, default_tz),
    )
