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
import codecs
from datetime import date, datetime
from typing import Any, Literal, cast

from pydantic import ValidationError

from mappings.errors import HL7ErrorCode, MessageRejected, NoReportText
from mappings.hl7.oru_in import normalise_text, safe_id
from mappings.language import detect_language
from mappings.report import Coding, EntityIdentifier, PatientIdentifier, Report, ResultStatus
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


def _no_text(reason: str, detail: str) -> NoReportText:
    return NoReportText(HL7ErrorCode.DATA_TYPE_ERROR, reason, detail)


def _check_model(resource: Resource) -> None:
    """Validate with the fhir.resources R4B model; the error names the element, never its value.

    An attachment's `data` over LARGE_DATA characters is checked on its own, as a stream
    (`_check_large_base64`), and the model sees a short stand-in: the model would decode it
    whole, copies included (a 9 MB body grew the API process by ~200 MB, issue 25)."""
    from fhir.resources.R4B import get_fhir_model_class

    kind = resource.get("resourceType")
    try:
        model = get_fhir_model_class(kind) if isinstance(kind, str) else None
    except KeyError:
        model = None
    if model is None:
        raise _reject("unsupported_resource", f"unknown resourceType {kind!r}")
    resource, large = _without_large_data(resource)
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
    for data in large:
        _check_large_base64(data)


LARGE_DATA = 64 * 1024
_CHUNK = 64 * 1024  # characters of base64 read at a time (a multiple of 4)


def _without_large_data(resource: Resource) -> tuple[Resource, list[str]]:
    """`resource` with each `presentedForm[].data` over LARGE_DATA characters replaced by a
    short valid stand-in (a shallow copy; the resource itself is left alone), and those data."""
    forms = resource.get("presentedForm")
    if not isinstance(forms, list):
        return resource, []
    large = [
        f["data"]
        for f in forms
        if isinstance(f, dict) and isinstance(f.get("data"), str) and len(f["data"]) > LARGE_DATA
    ]
    if not large:
        return resource, []
    stand_in = [
        {**f, "data": "AAAA"}
        if isinstance(f, dict) and any(f.get("data") is d for d in large)
        else f
        for f in forms
    ]
    return {**resource, "presentedForm": stand_in}, large


def _check_large_base64(data: str) -> None:
    """A large attachment's `data` is base64 (whitespace between characters allowed, as FHIR's
    base64Binary), read in chunks; invalid_resource otherwise."""
    carry = ""
    for start in range(0, len(data), _CHUNK):
        piece = carry + "".join(data[start : start + _CHUNK].split())
        last = start + _CHUNK >= len(data)
        cut = len(piece) if last else len(piece) - len(piece) % 4
        chunk, carry = piece[:cut], piece[cut:]
        try:
            if not last and "=" in chunk:
                raise ValueError("padding before the end")
            binascii.a2b_base64(chunk.encode("ascii"), strict_mode=True)
        except (binascii.Error, ValueError):
            raise _reject("invalid_resource", "presentedForm.data is not valid base64") from None


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


def _text_charset(attachment: Resource) -> str | None:
    """The charset of a text Attachment (`contentType` text/*; utf-8 unless it names one);
    None when the Attachment is not text."""
    media, _, params = str(attachment.get("contentType", "")).partition(";")
    if not media.strip().lower().startswith("text/"):
        return None
    charset = "utf-8"
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    return charset


def _attachment_text(attachment: Resource) -> tuple[str | None, bool]:
    """(text, is_binary) of one Attachment."""
    charset = _text_charset(attachment)
    if charset is None:
        return None, True
    data = attachment.get("data")
    if not isinstance(data, str):
        return None, False
    try:
        return base64.b64decode(data, validate=True).decode(charset, errors="replace"), False
    except (binascii.Error, ValueError, LookupError):
        raise _reject("invalid_resource", "presentedForm.data is not valid base64 text") from None


def _attachment_has_text(attachment: Resource) -> tuple[bool, bool]:
    """(has non-blank text, is_binary) of one Attachment: `_attachment_text`'s checks and
    answer, its data decoded a chunk at a time and no text kept."""
    charset = _text_charset(attachment)
    if charset is None:
        return False, True
    data = attachment.get("data")
    if not isinstance(data, str):
        return False, False
    found = False
    try:
        decoder = codecs.getincrementaldecoder(charset)(errors="replace")
        for start in range(0, max(len(data), 1), _CHUNK):
            chunk = data[start : start + _CHUNK]
            last = start + _CHUNK >= len(data)
            if not last and "=" in chunk:
                raise ValueError("padding before the end")
            raw = base64.b64decode(chunk, validate=True)
            if not found:
                found = bool(decoder.decode(raw, final=last).strip())
    except (binascii.Error, ValueError, LookupError):
        raise _reject("invalid_resource", "presentedForm.data is not valid base64 text") from None
    return found, False


def _check_narrative(report: Resource, index: _Index) -> None:
    """`_narrative`'s rejections (no_narrative, pdf_only, invalid data) without building the
    text: for the HTTP API, whose memory must stay a small multiple of the body's size."""
    found = saw_binary = False
    for attachment in report.get("presentedForm", []):
        text, binary = _attachment_has_text(attachment)
        saw_binary = saw_binary or binary
        found = found or text
    if not found:
        for reference in report.get("result", []):
            observation = index.resolve(reference, report)
            if observation and isinstance(observation.get("valueString"), str):
                found = found or bool(observation["valueString"].strip())
    conclusion = report.get("conclusion")
    if found or (isinstance(conclusion, str) and conclusion.strip()):
        return
    if saw_binary:
        raise _no_text(
            "pdf_only", "only non-text attachments (e.g. PDF); radbridge needs text/plain"
        )
    raise _no_text(
        "no_narrative", "no report text in presentedForm, result Observations or conclusion"
    )


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
            raise _no_text(
                "pdf_only", "only non-text attachments (e.g. PDF); radbridge needs text/plain"
            )
        raise _no_text(
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


def _report_identifiers(report: Resource) -> tuple[EntityIdentifier, ...]:
    """The DiagnosticReport's identifiers as sent (system, value, first type code)."""
    found = []
    for identifier in report.get("identifier", []):
        if identifier.get("value"):
            codings = (identifier.get("type") or {}).get("coding", [])
            found.append(
                EntityIdentifier(
                    value=str(identifier["value"]),
                    system=identifier.get("system"),
                    type_code=codings[0].get("code") if codings else None,
                )
            )
    return tuple(found)


def _subject_reference(report: Resource) -> str | None:
    """`subject.reference` as sent when it is a literal `Patient/<id>` (else None)."""
    reference = (report.get("subject") or {}).get("reference")
    if isinstance(reference, str) and reference.startswith("Patient/") and "?" not in reference:
        return reference.split("/_history", 1)[0]
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


_GENDERS = {"male", "female", "other", "unknown"}


def _patient(report: Resource, index: _Index) -> Resource:
    """The report's Patient when the Bundle holds it (else empty)."""
    patient = index.resolve(report.get("subject") or {}, report)
    return patient if patient is not None and patient.get("resourceType") == "Patient" else {}


def _sex(patient: Resource) -> Literal["male", "female", "other", "unknown"] | None:
    gender = patient.get("gender")
    if gender in _GENDERS:
        return cast(Literal["male", "female", "other", "unknown"], gender)
    return None


def _birth_date(patient: Resource) -> date | None:
    """Patient.birthDate to the day (a year or year-month alone is None)."""
    value = patient.get("birthDate")
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


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


NOT_READ = "(narrative checked, not read)"


def report_from_diagnostic_report(
    resource: Resource, index: _Index, default_language: str, *, read_text: bool = True
) -> Report:
    """One DiagnosticReport -> Report (MessageRejected when unusable). `read_text` False: the
    narrative is checked but not read (the Report's text is NOT_READ: only its other fields and
    the rejections count, as for `report_keys_from_fhir`)."""
    _check_model(resource)
    status = str(resource.get("status", ""))
    if status not in _USABLE_STATUS:
        raise _reject(
            "unusable_status", f"DiagnosticReport.status {status!r} carries no usable report"
        )
    if read_text:
        text = _narrative(resource, index)
    else:
        _check_narrative(resource, index)
        text = NOT_READ
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
        report_identifiers=_report_identifiers(resource),
        subject_reference=_subject_reference(resource),
        procedure=_procedure(resource),
        patient_sex=_sex(_patient(resource, index)),
        birth_date=_birth_date(_patient(resource, index)),
        result_status=_STATUS[status],
        observation_time=_time(resource),
        language=detect_language(text, default_language) if read_text else default_language,
        text=text,
        sections=find_sections(text) if read_text else (),
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
    reports, index = _diagnostic_reports(resource)
    return [report_from_diagnostic_report(r, index, default_language) for r in reports]


def report_keys_from_fhir(resource: Resource, *, default_language: str = "en") -> list[str]:
    """What `reports_from_fhir` checks, the same rejections, without reading the narratives:
    each report's store key (its resource id, else its report id), in entry order."""
    reports, index = _diagnostic_reports(resource)
    keys = []
    for report in reports:
        read = report_from_diagnostic_report(report, index, default_language, read_text=False)
        keys.append(read.fhir_resource_id or read.report_id)
    return keys


def _diagnostic_reports(resource: Resource) -> tuple[list[Resource], _Index]:
    """The DiagnosticReports of a resource (itself, or a Bundle's) and the index that resolves
    their references; MessageRejected when there is none to read."""
    resource = _without_nulls(resource)
    resource_type = resource.get("resourceType")
    if resource_type == "DiagnosticReport":
        return [resource], _Index([resource])
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
    return reports_in_bundle, index
