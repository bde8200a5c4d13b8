"""FHIR R4 DiagnosticReport (or a Bundle of them) -> `Report`.

Narrative, in order of preference: `presentedForm` attachments with a text/* content type
(base64 `data`, charset parameter honoured), else the `valueString` of the result Observations
(contained or in the same Bundle); `conclusion` is appended as its own paragraph when the text
does not already contain it. A report with only PDF/binary attachments and no conclusion is
rejected (`pdf_only`); one with no text at all `no_narrative`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from mappings.errors import HL7ErrorCode, MessageRejected
from mappings.hl7v2 import normalise_text, safe_id
from mappings.language import detect_language
from mappings.report import Coding, PatientIdentifier, Report, ResultStatus
from mappings.sections import find_sections

BUNDLE_TYPES = frozenset({"transaction", "batch", "collection", "document", "searchset", "message"})
_STATUS = {
    "registered": ResultStatus.PRELIMINARY,
    "partial": ResultStatus.PRELIMINARY,
    "preliminary": ResultStatus.PRELIMINARY,
    "final": ResultStatus.FINAL,
    "amended": ResultStatus.CORRECTED,
    "corrected": ResultStatus.CORRECTED,
    "appended": ResultStatus.CORRECTED,
}
_USABLE_STATUS = frozenset(_STATUS)

Resource = dict[str, Any]


def _reject(
    reason: str, detail: str, code: HL7ErrorCode = HL7ErrorCode.DATA_TYPE_ERROR
) -> MessageRejected:
    return MessageRejected(code, reason, detail)


def _check_model(resource: Resource) -> None:
    """Validate with the fhir.resources R4B model; the error names the element, never its value."""
    from fhir.resources.R4B import get_fhir_model_class

    kind = resource.get("resourceType")
    try:
        model = get_fhir_model_class(kind) if isinstance(kind, str) else None
    except KeyError:
        model = None
    if model is None:
        raise _reject("unsupported_resource", f"unknown resourceType {kind!r}")
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or resource["resourceType"]
        raise _reject(
            "invalid_resource", f"{resource['resourceType']}.{where}: {first['msg']}"
        ) from None
    except (TypeError, ValueError, AttributeError, KeyError):
        # fhir_core's validator raises these itself on some malformed shapes (a contained
        # resource whose resourceType is not a string): the input is invalid, not our bug
        raise _reject("invalid_resource", f"{kind} is not a valid R4 resource") from None


class _Index:
    """Resolves references inside a Bundle and among contained resources."""

    def __init__(self, resources: list[Resource]) -> None:
        self.by_ref: dict[str, Resource] = {}
        for resource in resources:
            self.add(resource)

    def add(self, resource: Resource, full_url: Any = None) -> None:
        if resource.get("id"):
            self.by_ref[f"{resource.get('resourceType')}/{resource['id']}"] = resource
        if isinstance(full_url, str) and full_url:
            self.by_ref[full_url] = resource

    def resolve(self, reference: Any, owner: Resource) -> Resource | None:
        if not isinstance(reference, dict):
            return None
        ref = reference.get("reference")
        if not isinstance(ref, str):
            return None
        if ref.startswith("#"):
            for contained in owner.get("contained", []):
                if isinstance(contained, dict) and contained.get("id") == ref[1:]:
                    return contained
            return None
        found = self.by_ref.get(ref) or self.by_ref.get(ref.split("/_history", 1)[0])
        if found is not None and found is not owner:
            _check_model(found)  # a Bundle entry is read only once it passed the model
        return found


def _attachment_text(attachment: Resource) -> tuple[str | None, bool]:
    """(text, is_binary) of one Attachment."""
    content_type = str(attachment.get("contentType", ""))
    media, _, params = content_type.partition(";")
    if not media.strip().lower().startswith("text/"):
        return None, True
    charset = "utf-8"
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    data = attachment.get("data")
    if not isinstance(data, str):
        return None, False
    try:
        return base64.b64decode(data, validate=True).decode(charset, errors="replace"), False
    except (binascii.Error, ValueError, LookupError):
        raise _reject("invalid_resource", "presentedForm.data is not valid base64 text") from None


def _contains(text: str, passage: str) -> bool:
    """Whether `passage` is in `text`, however either is wrapped ("No effusion or⏎pneumothorax"
    in a hard-wrapped presentedForm is the conclusion "No effusion or pneumothorax")."""
    return " ".join(passage.split()) in " ".join(text.split())


def _narrative(report: Resource, index: _Index) -> str:
    pieces: list[str] = []
    saw_binary = False
    for attachment in report.get("presentedForm", []):
        text, binary = _attachment_text(attachment)
        saw_binary = saw_binary or binary
        if text and text.strip():
            pieces.append(text)
    if not pieces:
        for reference in report.get("result", []):
            observation = index.resolve(reference, report)
            if observation and isinstance(observation.get("valueString"), str):
                pieces.append(observation["valueString"])
    text = "\n\n".join(piece.strip("\n") for piece in pieces)
    conclusion = report.get("conclusion")
    if isinstance(conclusion, str) and conclusion.strip() and not _contains(text, conclusion):
        text = f"{text}\n\n{conclusion.strip()}" if text else conclusion.strip()
    normalised = normalise_text(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    if not normalised.strip():
        if saw_binary:
            raise _reject(
                "pdf_only", "only non-text attachments (e.g. PDF); radbridge needs text/plain"
            )
        raise _reject(
            "no_narrative", "no report text in presentedForm, result Observations or conclusion"
        )
    return normalised


def _accession(report: Resource) -> str | None:
    for identifier in report.get("identifier", []):
        codings = (identifier.get("type") or {}).get("coding", [])
        if any(c.get("code") == "ACSN" for c in codings) and identifier.get("value"):
            return str(identifier["value"])
    for based_on in report.get("basedOn", []):
        value = (based_on.get("identifier") or {}).get("value")
        if value:
            return str(value)
    return None


def _patient_identifiers(report: Resource, index: _Index) -> tuple[PatientIdentifier, ...]:
    subject = report.get("subject") or {}
    patient = index.resolve(subject, report)
    identifiers = (patient or {}).get("identifier") or (
        [subject["identifier"]] if subject.get("identifier") else []
    )
    result = []
    for identifier in identifiers:
        if identifier.get("value"):
            codings = (identifier.get("type") or {}).get("coding", [])
            result.append(
                PatientIdentifier(
                    value=str(identifier["value"]),
                    system=identifier.get("system"),
                    type_code=codings[0].get("code") if codings else None,
                    assigner=(identifier.get("assigner") or {}).get("display"),
                )
            )
    return tuple(result)


def _time(report: Resource) -> datetime | None:
    value = (
        report.get("effectiveDateTime")
        or (report.get("effectivePeriod") or {}).get("start")
        or report.get("issued")
    )
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _procedure(report: Resource) -> Coding | None:
    code = report.get("code") or {}
    codings = code.get("coding") or []
    first = codings[0] if codings else {}
    display = first.get("display") or code.get("text")
    if not (first.get("code") or display):
        return None
    return Coding(code=first.get("code"), display=display, system=first.get("system"))


def report_from_diagnostic_report(
    resource: Resource, index: _Index, default_language: str
) -> Report:
    """One DiagnosticReport -> Report (MessageRejected when unusable)."""
    _check_model(resource)
    status = str(resource.get("status", ""))
    if status not in _USABLE_STATUS:
        raise _reject(
            "unusable_status", f"DiagnosticReport.status {status!r} carries no usable report"
        )
    text = _narrative(resource, index)
    identifiers = [i.get("value") for i in resource.get("identifier", []) if i.get("value")]
    raw_id = resource.get("id") or (identifiers[0] if identifiers else None)
    if not raw_id:
        raise _reject(
            "invalid_resource",
            "DiagnosticReport has neither id nor identifier",
            HL7ErrorCode.REQUIRED_FIELD_MISSING,
        )
    return Report(
        source_format="fhir",
        report_id=safe_id(str(raw_id)),
        fhir_resource_id=resource.get("id"),
        accession_number=_accession(resource) or (str(identifiers[0]) if identifiers else None),
        patient_identifiers=_patient_identifiers(resource, index),
        procedure=_procedure(resource),
        result_status=_STATUS[status],
        observation_time=_time(resource),
        language=detect_language(text, default_language),
        text=text,
        sections=find_sections(text),
    )


def _without_nulls(value: Any) -> Any:
    """`value` with every JSON null dropped (FHIR JSON has no nulls: absent means absent)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def reports_from_fhir(resource: Resource, *, default_language: str = "en") -> list[Report]:
    """Reports from a DiagnosticReport or a Bundle holding DiagnosticReports (a JSON null is
    read as an absent element)."""
    resource = _without_nulls(resource)
    resource_type = resource.get("resourceType")
    if resource_type == "DiagnosticReport":
        return [report_from_diagnostic_report(resource, _Index([resource]), default_language)]
    if resource_type != "Bundle":
        raise _reject(
            "unsupported_resource",
            f"expected DiagnosticReport or Bundle, got {resource_type!r}",
            HL7ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
        )
    bundle_type, entries = resource.get("type"), resource.get("entry", [])
    if not isinstance(bundle_type, str) or bundle_type not in BUNDLE_TYPES:
        raise _reject("unsupported_resource", f"unsupported Bundle.type {bundle_type!r}")
    if not isinstance(entries, list):
        raise _reject("invalid_resource", "Bundle.entry is not an array")
    index = _Index([])
    reports_in_bundle: list[Resource] = []
    for entry in entries:
        entry_resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(entry_resource, dict):
            continue
        index.add(entry_resource, entry.get("fullUrl"))
        if entry_resource.get("resourceType") == "DiagnosticReport":
            reports_in_bundle.append(entry_resource)
    if not reports_in_bundle:
        raise _reject(
            "no_diagnostic_report",
            "the Bundle holds no DiagnosticReport",
            HL7ErrorCode.REQUIRED_FIELD_MISSING,
        )
    return [report_from_diagnostic_report(r, index, default_language) for r in reports_in_bundle]
