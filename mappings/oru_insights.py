"""A Bundle's insights (issue 20) as OBX segments of the ORU^R01 out (`mappings.hl7.oru_out` calls
`insight_obx` once, after the Observations' OBX; RADS categories are Observations and go out
with them).

One text OBX (OBX-2 `ST`) per follow-up recommendation (ServiceRequest), critical result
(Flag), communication (Communication) and mismatch (DetectedIssue): OBX-3 text only (`^Follow-up
recommendation`, `^Critical result`, `^Result communicated`, `^Mismatch`: no code is verified
for these), OBX-5 what it says (the follow-up's modality, due date or period and whether it is
conditional; the finding; the recipient and time as written; the mismatch and its detail;
never OBX-3's name again: a Flag's `code.text` "Critical result: pneumothorax" gives OBX-5
"pneumothorax"),
OBX-11 `P` while it awaits review (draft, preliminary), `W` once rejected (entered-in-error),
else `F`, OBX-14 the report's effective time. The evidence quote is not sent (report text).
A Flag held until review (RADBRIDGE_FLAGS_HOLD_UNTIL_REVIEW, `mappings.flag_hold`) is left out
by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Resource = dict[str, Any]


def _text(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    codings = concept.get("coding") or []
    return str(concept.get("text") or (codings[0].get("display") if codings else "") or "")


def _followup(resource: Resource) -> str:
    parts = [_text(resource.get("code"))]
    modalities = [
        str(c.get("code"))
        for c in (resource.get("code") or {}).get("coding") or []
        if str(c.get("system", "")).endswith("/DCM")
    ]
    if modalities:
        parts.append("modality " + "/".join(modalities))
    period = resource.get("occurrencePeriod") or {}
    if "occurrenceDateTime" in resource:
        parts.append(f"due {resource['occurrenceDateTime']}")
    elif period:
        parts.append(f"due {period.get('start', '')} to {period.get('end', '')}")
    if resource.get("asNeededBoolean"):
        parts.append("conditional")
    return "; ".join(p for p in parts if p)


def _communication(resource: Resource) -> str:
    names = ", ".join(str(r.get("display")) for r in resource.get("recipient") or [])
    notes = [str(n.get("text")) for n in resource.get("note") or [] if n.get("text")]
    return "; ".join([f"to {names}" if names else "communicated", *notes])


def _mismatch(resource: Resource) -> str:
    return "; ".join(p for p in (_text(resource.get("code")), resource.get("detail")) if p)


# OBX-3 text and OBX-5 of each insight type (a new insight type is one entry here)
INSIGHT_OBX: dict[str, tuple[str, Callable[[Resource], str]]] = {
    "Flag": ("Critical result", lambda r: _text(r.get("code"))),
    "DetectedIssue": ("Mismatch", _mismatch),
    "ServiceRequest": ("Follow-up recommendation", _followup),
    "Communication": ("Result communicated", _communication),
}
_AWAITING = ("draft", "preliminary")


def insight_status(resource: Resource) -> str:
    """OBX-11 of an insight: P awaiting review, W rejected, else F."""
    status = resource.get("status")
    if status == "entered-in-error":
        return "W"
    return "P" if status in _AWAITING else "F"


def _without_name(name: str, value: str) -> str:
    """`value` without a leading "`name`:" (OBX-3 already says it)."""
    head, colon, rest = value.partition(":")
    if colon and head.strip().casefold() == name.casefold() and rest.strip():
        return rest.strip()
    return value


def insight_obx(
    resources: Sequence[Resource], after: int, effective: str, escape: Callable[[str], str]
) -> list[str]:
    """The OBX segments of the insights among `resources`, numbered from `after + 1`
    (`escape`: the message's ER7 escaping)."""
    segments = []
    for resource in resources:
        found = INSIGHT_OBX.get(str(resource.get("resourceType")))
        if found is None:
            continue
        name, describe = found
        value = escape(_without_name(name, describe(resource)))
        if not value:
            continue
        after += 1
        fields = ["OBX", str(after), "ST", f"^{escape(name)}", "", value, "", "", "", "", "",
                  insight_status(resource), "", "", effective]  # fmt: skip
        segments.append("|".join(fields).rstrip("|"))
    return segments
