"""The terminology tables radbridge installs, and the rule a template's code must pass.

Tables (`mappings.reference`, installed from npm registry packages by
`scripts/install-reference-data.sh`):
- SNOMED CT: the Global Patient Set 20200930 (26,158 concepts with their FSN), HL7's ValueSet
  `snomed-intl-gps` in `hl7.terminology.r4` 7.0.1. The GPS is CC BY 4.0 (SNOMED International).
- LOINC: the FHIR R4 value set `c80-doc-typecodes` (6,401 document codes with displays), as
  FHIR.js (`fhir` 4.12.0) ships it.

A code of a template is accepted when it is in its system's table with the table's display, or
when it is outside the tables and its `source` cites where it was verified (a URL, or
`owner/repo path@commit`): that is how a template adds a code without editing Python. A code on
the do-not-use list (`mappings.terminology.DO_NOT_USE`) is never accepted.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from mappings import terminology as term
from mappings.errors import TerminologyUnavailable
from mappings.reference import INSTALL_HINT, looked_in, reference_path

GPS_FILE = "snomed-intl-gps.json"
VALUESETS_FILE = "fhir-r4-valuesets.json"
C80_URL = "http://hl7.org/fhir/ValueSet/c80-doc-typecodes"
TABLE_NAMES = {
    term.SNOMED: "the SNOMED CT Global Patient Set 20200930 (hl7.terminology.r4 7.0.1)",
    term.LOINC: "the FHIR R4 LOINC document codes c80-doc-typecodes (fhir 4.12.0)",
}
_CITATION = re.compile(r"https?://\S+|\b[\w.-]+/[\w.-]+\b.*@[0-9a-f]{7,40}\b")


def _read(name: str) -> Any:
    path = reference_path(name)
    if path is None:
        raise TerminologyUnavailable(
            f"the terminology table {name} is not installed (looked in {looked_in(name)}): "
            f"{INSTALL_HINT}"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TerminologyUnavailable(f"{path}: unreadable ({type(exc).__name__})") from None


@functools.cache
def snomed_gps() -> dict[str, str]:
    """SNOMED CT GPS: code -> fully specified name."""
    valueset = _read(GPS_FILE)
    return {
        concept["code"]: concept["display"]
        for include in valueset["compose"]["include"]
        if include.get("system") == term.SNOMED
        for concept in include.get("concept", [])
    }


@functools.cache
def loinc_documents() -> dict[str, str]:
    """LOINC document codes of the R4 value set c80-doc-typecodes: code -> display."""
    valuesets = _read(VALUESETS_FILE)
    return {
        concept["code"]: concept["display"]
        for system in valuesets[C80_URL]["systems"]
        if system.get("uri") == term.LOINC
        for concept in system["codes"]
    }


def table_display(system: str, code: str) -> str | None:
    """The display of a SNOMED CT or LOINC code in the installed table (None: not in it, or a
    system without a table); TerminologyUnavailable when the table is not installed."""
    if system == term.SNOMED:
        return snomed_gps().get(code)
    if system == term.LOINC:
        return loinc_documents().get(code)
    return None


def is_citation(source: str) -> bool:
    """Whether `source` cites where a code was verified: a URL or `owner/repo path@commit`."""
    return _CITATION.search(source) is not None


def code_problems(system: str, code: str, display: str, source: str) -> list[str]:
    """What is wrong with a template's code (empty: accepted)."""
    if (system, code) in term.DO_NOT_USE:
        return [f"{system}|{code} is on the do-not-use list (mappings/terminology.py)"]
    try:
        expected = table_display(system, code)
    except TerminologyUnavailable as exc:
        return [str(exc)]
    if expected is not None:
        if display != expected:
            return [
                f"display {display!r} is not {expected!r}, the display in {TABLE_NAMES[system]}"
            ]
        return []
    if is_citation(source):
        return []
    where = TABLE_NAMES.get(system, "a table radbridge installs")
    return [
        f"{system}|{code} is not in {where}: a code outside the tables needs a `source` citing "
        "where it was verified (a URL, or owner/repo path@commit)"
    ]
