"""The review page's view of a report (pure): the text cut into evidence segments and one
row per Observation with its value, codes behind a toggle, evidence and correction form."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapter.reviews import StoredObservation
from mappings.fhir_grades import is_grade_component
from mappings.fhir_out import LATERALITY_EXTENSION
from mappings.review import CorrectionField, correction_field, evidence, template_of
from mappings.template import Template


@dataclass(frozen=True)
class Segment:
    """A piece of the report text; `evidence` = the Observation ids whose quote covers it."""

    text: str
    evidence: tuple[str, ...]


def segments(text: str, spans: list[tuple[int, int, str]]) -> list[Segment]:
    """The report text cut at every span boundary (overlapping spans allowed)."""
    valid = [(s, e, i) for s, e, i in spans if 0 <= s < e <= len(text)]
    cuts = sorted({0, len(text), *(s for s, _, _ in valid), *(e for _, e, _ in valid)})
    pieces = []
    for start, end in itertools.pairwise(cuts):
        covering = tuple(i for s, e, i in valid if s <= start and end <= e)
        pieces.append(Segment(text[start:end], covering))
    return pieces


@dataclass(frozen=True)
class ObservationView:
    """One Observation row of the review page."""

    id: str
    version: int
    status: str
    code: str
    value: str
    body_site: str
    confidence: str
    flags: tuple[str, ...]
    quote: str
    found: bool
    variable: str
    field: CorrectionField | None
    ai_value: str
    current: str = ""
    current_location: str = ""
    undoable: bool = False
    label: str = ""  # the finding's name without its codes (codes are behind a toggle)
    value_label: str = ""
    body_site_label: str = ""
    laterality: str = ""  # the stated side on the body site, with its code ("" when none)
    laterality_label: str = ""


_PRESENCE_CODES = {"52101004": "present", "2667000": "absent", "42425007": "uncertain"}


def _current(body: dict[str, Any], template: Template, variable_id: str) -> tuple[str, str]:
    """The stored value as the correction form's option (preselected) and its location id."""
    concept = body.get("valueCodeableConcept") or {}
    codes = [str(c.get("code")) for c in concept.get("coding") or []]
    current = ""
    if "valueInteger" in body:
        current = str(body["valueInteger"])
    elif "valueQuantity" in body:
        current = str(body["valueQuantity"].get("value", ""))
    elif codes and codes[0] in _PRESENCE_CODES:
        current = _PRESENCE_CODES[codes[0]]
    else:
        try:
            options = template.variable(variable_id).options
        except KeyError:
            options = ()
        for option in options:
            if (option.code and option.code.code in codes) or option.label == concept.get("text"):
                current = option.id
    site = body.get("bodySite") or {}
    site_codes = [str(c.get("code")) for c in site.get("coding") or []]
    location = next(
        (
            loc.id
            for loc in template.locations
            if (loc.code and loc.code.code in site_codes) or loc.label == site.get("text")
        ),
        "",
    )
    return current, location


def label(concept: dict[str, Any] | None) -> str:
    """A concept's text (or first display) without its code."""
    if not concept:
        return ""
    codings = concept.get("coding") or []
    return str(concept.get("text") or (codings[0].get("display") if codings else "") or "")


def value_label_text(resource: dict[str, Any]) -> str:
    """A value (and its components) without codes."""
    if "valueCodeableConcept" in resource:
        text = label(resource["valueCodeableConcept"])
        for component in resource.get("component") or []:
            text += f"; {_component_text(component, label)}"
        return text
    return value_text(resource)


def _quantity_text(quantity: dict[str, Any]) -> str:
    return f"{quantity.get('value')} {quantity.get('unit', '')}".strip()


def _component_text(component: dict[str, Any], show: Callable[[Any], str]) -> str:
    """A component's value: a size as `diameter 12 mm` (the insights step's size Observations
    and sized template findings), a grade as `Kellgren-Lawrence grade 3` or `Severity
    moderate`, else its concept."""
    if "valueQuantity" in component:
        return f"{label(component.get('code'))} {_quantity_text(component['valueQuantity'])}"
    if "valueInteger" in component:
        return f"{label(component.get('code'))} {component['valueInteger']}"
    if is_grade_component(component):
        return f"{label(component.get('code'))} {show(component.get('valueCodeableConcept'))}"
    return show(component.get("valueCodeableConcept"))


def laterality(body_site: dict[str, Any] | None) -> dict[str, Any] | None:
    """The side stated on a body site (the `…/laterality` extension's concept), or None."""
    for extension in (body_site or {}).get("extension") or []:
        if extension.get("url") == LATERALITY_EXTENSION:
            concept: dict[str, Any] | None = extension.get("valueCodeableConcept")
            return concept
    return None


def coded_text(concept: dict[str, Any] | None) -> str:
    """A concept's text with its first code: `label (system code)`."""
    if not concept:
        return ""
    codings = concept.get("coding") or []
    name = concept.get("text") or (codings[0].get("display") if codings else "") or ""
    if not codings:
        return str(name)
    system = str(codings[0].get("system", "")).rsplit("/", 1)[-1]
    return f"{name} ({system} {codings[0].get('code')})"


def value_text(resource: dict[str, Any]) -> str:
    """A value (and its components) with codes."""
    if "valueCodeableConcept" in resource:
        text = coded_text(resource["valueCodeableConcept"])
        for component in resource.get("component") or []:
            text += f"; {_component_text(component, coded_text)}"
        return text
    if "valueInteger" in resource:
        return str(resource["valueInteger"])
    if "valueQuantity" in resource:
        return _quantity_text(resource["valueQuantity"])
    return ""


def ai_value_text(resource: dict[str, Any]) -> str:
    """The AI's value a correction replaced (kept in the evidence extension), or ""."""
    subs = evidence(resource)
    old = (subs.get("ai-value") or [None])[0]
    if isinstance(old, dict) and ("coding" in old or "text" in old):
        return coded_text(old)
    if isinstance(old, dict):
        return f"{old.get('value')} {old.get('unit', '')}".strip()
    return "" if old is None else str(old)


def observation_view(
    stored: StoredObservation, templates: dict[str, Template], can_undo: bool = False
) -> ObservationView:
    """The review page's row of one stored Observation."""
    body = stored.body
    subs = evidence(body)
    ids = template_of(body)
    field = None
    variable_id = ids[1] if ids else ""
    current, location = "", ""
    if ids and ids[0] in templates:
        template = templates[ids[0]]
        try:
            field = correction_field(template, template.variable(ids[1]))
        except KeyError:
            field = None
        current, location = _current(body, template, variable_id)
    confidence = (subs.get("confidence") or [None])[0]
    site = body.get("bodySite") or {}
    side = laterality(site)
    if side is not None and not site.get("coding") and site.get("text") == label(side):
        site = {}  # a side without a site: shown once, as the side
    return ObservationView(
        id=str(body["id"]),
        version=stored.version,
        status=str(body.get("status")),
        code=coded_text(body.get("code")),
        value=value_text(body),
        body_site=coded_text(site),
        confidence=f"{confidence:.2f}" if isinstance(confidence, (int, float)) else "",
        flags=tuple(str(f) for f in subs.get("flag", [])),
        quote=str((subs.get("quote") or [""])[0]),
        found=bool(subs.get("start")),
        variable=variable_id,
        field=field,
        ai_value=ai_value_text(body),
        current=current,
        current_location=location,
        undoable=can_undo,
        label=label(body.get("code")),
        value_label=value_label_text(body),
        body_site_label=label(site),
        laterality=coded_text(side),
        laterality_label=label(side),
    )
