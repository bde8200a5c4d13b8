"""Who and what a report is about, for reviewers: patient name, MRN, accession, exam, exam date.

The store's Patient holds identifiers only (never names), so the name comes from the stored
source message (HL7v2 PID-5, or the FHIR Patient sent with the report), parsed again on demand
and kept in a small in-memory cache. Reviewer pages only: operators never see names. Nothing
here logs what it reads.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapter.reviews import message_of_report
from adapter.settings import Settings
from adapter.store import Store
from mappings.errors import RadbridgeError
from mappings.fhir_out import diagnostic_report_id
from mappings.report import Report

CACHE_SIZE = 512  # parsed source reports kept (worklist pages re-read the same messages)


@dataclass(frozen=True)
class ReportIdentity:
    """The patient and exam a report belongs to ("" where the source does not say)."""

    patient_name: str
    mrn: str
    accession: str
    exam: str
    exam_date: str


def person_name(report: Report | None) -> str:
    """`FAMILY, Given Middle` from PID-5's first repetition ("" when there is none)."""
    if report is None or not report.patient_name:
        return ""
    components = [" ".join(p for p in c if p).strip() for c in report.patient_name[0]]
    family = components[0] if components else ""
    given = " ".join(c for c in components[1:3] if c)
    return ", ".join(p for p in (family, given) if p)


def _fhir_name(resource: dict[str, Any] | None) -> str:
    """`FAMILY, Given` from a FHIR Patient's first name ("" when none)."""
    names = (resource or {}).get("name") or []
    if not names or not isinstance(names[0], dict):
        return ""
    first = names[0]
    if first.get("family") or first.get("given"):
        given = " ".join(str(g) for g in first.get("given") or [])
        return ", ".join(p for p in (str(first.get("family") or ""), given) if p)
    return str(first.get("text") or "")


def _mrn(patient: dict[str, Any] | None) -> str:
    """The MR identifier (HL7 PID-3 type MR, or FHIR type code MR), else the first one."""
    identifiers = [i for i in (patient or {}).get("identifier") or [] if isinstance(i, dict)]
    for identifier in identifiers:
        kind = identifier.get("type") or {}
        codes = [c.get("code") for c in kind.get("coding") or []]
        if kind.get("text") == "MR" or "MR" in codes:
            return str(identifier.get("value", ""))
    return str(identifiers[0].get("value", "")) if identifiers else ""


def _accession(report: dict[str, Any]) -> str:
    for identifier in report.get("identifier") or []:
        codes = [c.get("code") for c in (identifier.get("type") or {}).get("coding") or []]
        if "ACSN" in codes:
            return str(identifier.get("value", ""))
    return ""


def _exam(report: dict[str, Any]) -> str:
    code = report.get("code") or {}
    codings = code.get("coding") or []
    return str(code.get("text") or (codings[0].get("display") if codings else "") or "")


def _exam_date(report: dict[str, Any]) -> str:
    value = report.get("effectiveDateTime") or (report.get("effectivePeriod") or {}).get("start")
    return str(value or "")[:16].replace("T", " ")


class Identities:
    """Reads report identities and source reports, caching parsed source messages."""

    def __init__(
        self, store: Store, settings: Settings, parse: Callable[[int], list[Report]] | None = None
    ) -> None:
        self._store = store
        self._settings = settings
        self._parse = parse or self._parse_stored
        self._cache: OrderedDict[int, list[Report]] = OrderedDict()

    def _parse_stored(self, message_id: int) -> list[Report]:
        from mappings.inbound import parse_message

        return parse_message(
            self._store.raw(message_id),
            self._store.content_type(message_id),
            default_charset=self._settings.default_charset,
            default_language=self._settings.default_language,
        )

    def _reports(self, message_id: int) -> list[Report]:
        if message_id in self._cache:
            self._cache.move_to_end(message_id)
            return self._cache[message_id]
        try:
            reports = self._parse(message_id)
        except RadbridgeError:
            reports = []
        self._cache[message_id] = reports
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return reports

    def source(self, report_id: str) -> Report | None:
        """The parsed source report of a stored DiagnosticReport (None when its message is not
        in the store or no longer parses)."""
        message_id = message_of_report(self._store, report_id)
        if message_id is None:
            return None
        for report in self._reports(message_id):
            if diagnostic_report_id(report) == report_id or report.fhir_resource_id == report_id:
                return report
        return None

    def of(self, report_id: str) -> ReportIdentity:
        """The patient and exam of a stored DiagnosticReport."""
        report = self._store.get_resource("DiagnosticReport", report_id) or {}
        subject = str((report.get("subject") or {}).get("reference") or "")
        patient = None
        if subject.startswith("Patient/"):
            patient = self._store.get_resource("Patient", subject.removeprefix("Patient/"))
        source = self.source(report_id)
        name = person_name(source)
        if not name and source is not None and source.source_format == "fhir":
            name = _fhir_name(self._fhir_patient(report_id))
        return ReportIdentity(
            patient_name=name,
            mrn=_mrn(patient),
            accession=_accession(report) or (source.accession_number or "" if source else ""),
            exam=_exam(report),
            exam_date=_exam_date(report),
        )

    def _fhir_patient(self, report_id: str) -> dict[str, Any] | None:
        """A Patient sent with a FHIR report (a Bundle entry or a contained resource)."""
        import json

        message_id = message_of_report(self._store, report_id)
        if message_id is None:
            return None
        try:
            sent = json.loads(self._store.raw(message_id))
        except (ValueError, RadbridgeError):
            return None
        if not isinstance(sent, dict):
            return None
        candidates = [e.get("resource") for e in sent.get("entry") or [] if isinstance(e, dict)]
        for resource in [*candidates, *(sent.get("contained") or [])]:
            if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
                return resource
        return None
