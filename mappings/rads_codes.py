"""The codes of a RADS Observation (issue 20 item 4): what `code` and `valueCodeableConcept`
carry beside their text, and why the rest stays text only.

Verified in the SNOMED CT Global Patient Set (GPS 2019 in ../shared/terminology and the GPS
20200930 radbridge installs, same FSN; `mappings.terminology.TERMS`):
- BI-RADS assessment categories 0-5 of a **mammogram** (modality MG): 397138000 ... 397145000
  "Mammography assessment (Category N) - ..." (the same codes as the HL7 Lithuanian breast IG's
  ValueSet birads-category, https://build.fhir.org/ig/HL7LT/ig-lt-breast/en/ValueSet-birads-category.html);
  the concepts name mammography, so a category of a breast ultrasound or MRI, 4A/4B/4C (the GPS
  has Category 4 only) and 6 (the IG's 6111000179101 is not in the GPS) stay text only;
- breast density a-d: 129716005 ... 129719003, and the Observation's code 129715009
  "Mammographic breast composition finding", as the breast template codes `breast_density`.
No LOINC code for any of these categories is in the LOINC table radbridge installs (the FHIR
R4 document codes c80), and Lung-RADS, PI-RADS, ACR TI-RADS, LI-RADS and O-RADS have no concept
in the GPS: their Observations are text only (`UNCODED_RADS` says why).
"""

from __future__ import annotations

from typing import Any

from mappings import terminology as term

BIRADS_MAMMOGRAPHY: dict[str, str] = {
    "0": "397138000",
    "1": "397140005",
    "2": "397141009",
    "3": "397143007",
    "4": "397144001",
    "5": "397145000",
}
"""BI-RADS category -> SNOMED CT Mammography assessment (Category N) (finding)."""
DENSITY: dict[str, str] = {
    "a": "129716005",
    "b": "129717001",
    "c": "129718006",
    "d": "129719003",
}
"""ACR breast composition a-d -> SNOMED CT breast composition finding."""
DENSITY_CODE = "129715009"
"""SNOMED CT Mammographic breast composition finding (finding): the density Observation's code."""

_NO_LOINC = "no LOINC code in the installed LOINC table (FHIR R4 c80 document codes)"
_NO_CONCEPT = "no concept in the SNOMED CT GPS 2019 or 20200930, " + _NO_LOINC
UNCODED_RADS: dict[str, str] = {
    "BI-RADS": (
        "Observation.code: " + _NO_LOINC + " and no SNOMED CT concept for the assessment itself; "
        "the value is coded for a mammogram's categories 0-5 only (the GPS concepts are "
        "mammography assessments: not 4A/4B/4C, 6, ultrasound or MRI)"
    ),
    "Lung-RADS": _NO_CONCEPT,
    "PI-RADS": _NO_CONCEPT,
    "TI-RADS": _NO_CONCEPT,
    "LI-RADS": _NO_CONCEPT,
    "O-RADS": _NO_CONCEPT,
}
"""Why a RADS system's Observation (or part of it) is text only."""


def rads_code_codings(system: str) -> list[dict[str, Any]]:
    """The codings of a RADS Observation's `code` (empty: text only)."""
    return [term.coding(term.SNOMED, DENSITY_CODE)] if system == "BI-RADS density" else []


def rads_value_codings(system: str, category: str, modality: str | None) -> list[dict[str, Any]]:
    """The codings of a RADS category's `valueCodeableConcept` (empty: text only); `modality`
    is the report's DICOM modality (BI-RADS categories are coded for MG only)."""
    if system == "BI-RADS" and modality == "MG" and category in BIRADS_MAMMOGRAPHY:
        return [term.coding(term.SNOMED, BIRADS_MAMMOGRAPHY[category])]
    if system == "BI-RADS density" and category in DENSITY:
        return [term.coding(term.SNOMED, DENSITY[category])]
    return []
