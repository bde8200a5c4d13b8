"""Size `component`s of a finding's Observation (issue 20 item 5).

A present or uncertain finding with stated sizes (`FindingValue.sizes`, from
`workers.measurements`) keeps its presence as `valueCodeableConcept` and gets one `component` per
stated dimension, in the order written: `valueQuantity` in UCUM `mm` or `cm` as the report states
it ("3.2 x 2.1 cm" gives 3.2 cm and 2.1 cm), and `code` from the DICOM linear-measurement
concepts (CID 7470, the IPS ValueSet `imaging-linear-measure-code-uv-ips`), each in SNOMED GPS
2019: the largest dimension of a size with several is `103339001` Long axis, every other
dimension and a size of one dimension `81827009` Diameter. So the largest dimension of each size
is its Long-axis component, or its only component. Each component carries the evidence extension
of its size (quote, start, end): the components of one size share it, which tells apart the sizes
of several lesions of one finding ("a 9 mm and a 12 mm nodule").

Where a finding gives several Observations (one per site), its sizes go on the first only, so a
size is never stated twice. A reviewer's correction to absent removes them (`mappings.review`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mappings import terminology as term
from mappings.report import FindingStatus, FindingValue, Measurement
from mappings.template import CodeRef

Resource = dict[str, Any]

LONG_AXIS = "103339001"
DIAMETER = "81827009"
_TEXT = {LONG_AXIS: "long axis (largest stated dimension)", DIAMETER: "diameter"}


def code_concept(code: CodeRef | None, text: str) -> dict[str, Any]:
    """A CodeableConcept of a template's code (its label as text), or the text alone; the
    code was checked when the template loaded (mappings.terminology_tables)."""
    if code is None:
        return {"text": text}
    coding = {"system": code.system, "code": code.code, "display": code.display}
    return {"coding": [coding], "text": text}


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _evidence(size: Measurement, evidence_url: str) -> Resource:
    parts: list[Resource] = [{"url": "quote", "valueString": size.evidence.quote}]
    if size.evidence.start is not None and size.evidence.end is not None:
        parts += [
            {"url": "start", "valueInteger": size.evidence.start},
            {"url": "end", "valueInteger": size.evidence.end},
        ]
    return {"url": evidence_url, "extension": parts}


def size_components(value: FindingValue, evidence_url: str) -> list[Resource]:
    """The components of a finding's sizes (none for an absent or unmentioned finding)."""
    if value.status not in (FindingStatus.PRESENT, FindingStatus.UNCERTAIN):
        return []
    return measurement_components(value.sizes, evidence_url)


def measurement_components(sizes: Iterable[Measurement], evidence_url: str) -> list[Resource]:
    """The components of `sizes`, one per dimension in the order written (also the insights
    step's size Observations, `mappings.insights.fhir`)."""
    components: list[Resource] = []
    for size in sizes:
        largest = size.dims.index(max(size.dims))
        for index, dimension in enumerate(size.dims):
            code = LONG_AXIS if len(size.dims) > 1 and index == largest else DIAMETER
            components.append(
                {
                    "extension": [_evidence(size, evidence_url)],
                    "code": {"coding": [term.coding(term.SNOMED, code)], "text": _TEXT[code]},
                    "valueQuantity": {
                        "value": _number(dimension),
                        "unit": size.unit,
                        "system": term.UCUM,
                        "code": size.unit,
                    },
                }
            )
    return components


def size_spans(components: Iterable[Resource]) -> set[tuple[int, int]]:
    """The (start, end) of the sizes that size components state (from their evidence)."""
    spans: set[tuple[int, int]] = set()
    for component in components:
        if not is_size_component(component):
            continue
        for extension in component.get("extension") or []:
            parts = {p["url"]: p for p in extension.get("extension") or []}
            if "start" in parts and "end" in parts:
                spans.add((parts["start"]["valueInteger"], parts["end"]["valueInteger"]))
    return spans


def is_size_component(component: Resource) -> bool:
    """True for a component `size_components` made (its code is Long axis or Diameter)."""
    codings = (component.get("code") or {}).get("coding") or []
    return any(c.get("system") == term.SNOMED and c.get("code") in _TEXT for c in codings)
