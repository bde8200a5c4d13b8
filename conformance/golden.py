"""Golden files of `radbridge replay`: what is volatile, how it is normalised, how diffs look.

Volatile, replaced by a placeholder before comparing (everything else must match exactly):

- HL7v2 ACK: MSH-7 (time the ACK was built) -> `<timestamp>`; MSH-10 (the ACK's own control
  id, generated per listener start) -> `<control-id>`. MSA-2 (echo of the inbound MSH-10), the
  ACK code and the ERR segment are kept.
- FHIR answers of the HTTP API: the job number in `Location` and in the OperationOutcome text
  -> `<job>`; the text's " (duplicate)" mark is dropped (replaying a folder twice against one
  service is normal; an HL7v2 resend gets the stored ACK, so it is unchanged there too).
- FHIR resources: `meta.lastUpdated` and `meta.versionId` (set by a server) -> `<instant>` and
  `<version>`; Observation `issued` and Provenance `recorded` (the moment of extraction) ->
  `<instant>`; the evidence `confidence` of values made by the `llm` or `hybrid` stage ->
  `<confidence>` (decimals move with the model build and hardware; values of the `rules` stage
  are deterministic and kept).
  Resource ids are NOT normalised: they are UUIDv5 of the report and the finding, and a changed
  id is a real change (a resent report would no longer overwrite its earlier results).

Golden files are text: ACKs one segment per line, FHIR as JSON with sorted keys and two-space
indents, so a unified diff points at the changed field.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

TIMESTAMP = "<timestamp>"
CONTROL_ID = "<control-id>"
JOB = "<job>"
INSTANT = "<instant>"
VERSION = "<version>"
CONFIDENCE = "<confidence>"
NO_ACK = "(no acknowledgement)"
DUPLICATE_MARK = " (duplicate)"
_JOB_NUMBER = re.compile(r"(job |/jobs/)\d+")
_JOB_REPLACEMENT = r"\g<1>" + JOB
_VOLATILE_INSTANTS = {"Observation": ("issued",), "Provenance": ("recorded",)}
_MODEL_STAGES = frozenset({"llm", "hybrid"})


def normalise_ack(ack: bytes | None) -> str:
    """One HL7v2 ACK as golden text: segments on their own lines, MSH-7 and MSH-10 replaced."""
    if ack is None:
        return NO_ACK + "\n"
    text = ack.decode("utf-8", errors="replace").replace("\r\n", "\r").replace("\n", "\r")
    lines = []
    for segment in filter(None, (s.strip() for s in text.split("\r"))):
        if segment.startswith("MSH") and len(segment) > 3:
            fields = segment.split(segment[3])
            # fields[0] is "MSH" and fields[1] MSH-2, so MSH-n is fields[n - 1]
            for index, placeholder in ((6, TIMESTAMP), (9, CONTROL_ID)):
                if len(fields) > index and fields[index]:
                    fields[index] = placeholder
            segment = segment[3].join(fields)
        lines.append(segment)
    return "\n".join(lines) + "\n"


def normalise_http_answer(status: int, body: bytes, location: str | None) -> str:
    """The FHIR API's answer to a posted report (status, Location, OperationOutcome) as text."""
    lines = [f"HTTP {status}"]
    if location:
        lines.append("Location: " + _JOB_NUMBER.sub(_JOB_REPLACEMENT, location))
    try:
        outcome: Any = json.loads(body) if body else None
    except ValueError:
        outcome = body.decode("utf-8", errors="replace")
    text = canonical_json(outcome) if outcome is not None else ""
    text = _JOB_NUMBER.sub(_JOB_REPLACEMENT, text).replace(DUPLICATE_MARK, "")
    return "\n".join(lines) + "\n" + text


def _normalise_evidence(resource: dict[str, Any]) -> None:
    for extension in resource.get("extension", []):
        subs = extension.get("extension") if isinstance(extension, dict) else None
        if not isinstance(subs, list):
            continue
        stage = next((s.get("valueCode") for s in subs if s.get("url") == "stage"), None)
        if stage not in _MODEL_STAGES:
            continue
        for sub in subs:
            if sub.get("url") == "confidence" and "valueDecimal" in sub:
                sub["valueDecimal"] = CONFIDENCE


def normalise_resource(resource: dict[str, Any]) -> dict[str, Any]:
    """A copy of one FHIR resource with its volatile fields replaced (see module docstring)."""
    copy: dict[str, Any] = json.loads(json.dumps(resource))
    meta = copy.get("meta")
    if isinstance(meta, dict):
        for key in ("lastUpdated", "versionId"):
            if key in meta:
                meta[key] = INSTANT if key == "lastUpdated" else VERSION
    for key in _VOLATILE_INSTANTS.get(str(copy.get("resourceType")), ()):
        if key in copy:
            copy[key] = INSTANT
    if copy.get("resourceType") == "Observation":
        _normalise_evidence(copy)
    return copy


def canonical_json(data: Any) -> str:
    """JSON as golden text: sorted keys, two-space indents, non-ASCII kept, final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def unified_diff(expected: str, actual: str, name: str) -> str:
    """A unified diff from the golden text to what the service answered ('' when equal)."""
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{name} (golden)",
            tofile=f"{name} (replayed)",
        )
    )
