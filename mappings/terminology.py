"""The project's code table: every clinical code radbridge emits, each with where it was verified.

Sources (paths relative to the repository's `../shared/terminology/`):
- `snomed-gps-2019.tsv`: SNOMED CT Global Patient Set 2019 (code + FSN), HL7/fhir-ips.
- `verified-codes.tsv`: the project's verified short list (source and strength per code).
- `loinc-radiology-subset-from-R4-c80.tsv`: LOINC document codes from the FHIR R4 spec.
- HL7 terminology (THO) codes cited from the FHIR R4 specification or an HL7 IG page.

A code not in this table is never emitted; a concept without a verified code is emitted as
text only and listed in `UNCODED_CONCEPTS`. Codes found WRONG in public code are in
`DO_NOT_USE` and rejected by `require`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mappings.errors import TerminologyError

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V3_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
PROVENANCE_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

GPS = "shared/terminology/snomed-gps-2019.tsv"
VERIFIED = "shared/terminology/verified-codes.tsv"
C80 = "shared/terminology/loinc-radiology-subset-from-R4-c80.tsv"


@dataclass(frozen=True)
class TermEntry:
    """One verified code: where it was checked and how strong that check is."""

    system: str
    code: str
    display: str
    source: str
    strength: str


TERMS: tuple[TermEntry, ...] = (
    # presence qualifiers (DESIGN.md 'Observation shapes')
    TermEntry(SNOMED, "52101004", "Present (qualifier value)", GPS, "GPS"),
    TermEntry(SNOMED, "2667000", "Absent (qualifier value)", GPS, "GPS"),
    TermEntry(SNOMED, "42425007", "Equivocal (qualifier value)", GPS, "GPS"),
    # chest findings
    TermEntry(SNOMED, "60046008", "Pleural effusion (disorder)", f"{GPS}; {VERIFIED}", "GPS"),
    TermEntry(SNOMED, "36118008", "Pneumothorax (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "46621007", "Atelectasis (disorder)", f"{GPS}; {VERIFIED}", "GPS"),
    TermEntry(SNOMED, "8186001", "Cardiomegaly (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "19242006", "Pulmonary edema (disorder)", GPS, "GPS"),
    TermEntry(
        SNOMED,
        "95436008",
        "Lung consolidation (disorder)",
        f"{VERIFIED} (HL7LT/ig-lt-lung incidental-finding-lt-lung.fsh@22343a72 + OMOP row)",
        "2 sources",
    ),
    TermEntry(
        SNOMED,
        "1217294009",
        "Ground glass opacity",
        f"{VERIFIED} (HL7LT/ig-lt-lung pulmonary-nodule-type-vs-lt-lung.fsh@043a8a1f + 2 repos)",
        "2+ sources",
    ),
    # body sites
    TermEntry(SNOMED, "39607008", "Lung structure (body structure)", f"{GPS}; {VERIFIED}", "GPS"),
    TermEntry(
        SNOMED,
        "3341006",
        "Right lung structure (body structure)",
        f"{VERIFIED} (HL7 genomics FSH examples; HL7/fhir-mCODE-ig EX_GenomeX.fsh@543477b5)",
        "IG examples",
    ),
    TermEntry(
        SNOMED,
        "44029006",
        "Left lung structure (body structure)",
        f"{VERIFIED} (HL7 genomics FSH examples; HL7/fhir-mCODE-ig EX_GenomeX.fsh@543477b5)",
        "IG examples",
    ),
    TermEntry(
        SNOMED,
        "42400003",
        "Structure of upper lobe of right lung (body structure)",
        f"{VERIFIED} (HL7LT/ig-lt-lung lung-lobe-vs-lt-lung.fsh@043a8a1f + 1 mapping)",
        "1 IG + 1 mapping",
    ),
    TermEntry(
        SNOMED, "72481006", "Structure of middle lobe of right lung (body structure)", GPS, "GPS"
    ),
    TermEntry(
        SNOMED,
        "266005",
        "Structure of lower lobe of right lung (body structure)",
        f"{VERIFIED} (lt-lung VS; SNOMED editorial guide)",
        "2 sources",
    ),
    TermEntry(
        SNOMED, "44714003", "Structure of upper lobe of left lung (body structure)", GPS, "GPS"
    ),
    TermEntry(
        SNOMED,
        "41224006",
        "Structure of lower lobe of left lung (body structure)",
        f"{VERIFIED} (lt-lung; HL7/fhir-mCODE-ig EX_Genomics.fsh)",
        "2 IGs",
    ),
    TermEntry(SNOMED, "3120008", "Pleural membrane structure (body structure)", GPS, "GPS"),
    # LOINC document / procedure codes (FHIR R4 c80 value set)
    TermEntry(LOINC, "18748-4", "Diagnostic imaging study", C80, "official"),
    TermEntry(
        LOINC,
        "68604-8",
        "Radiology Diagnostic study note",
        f"{VERIFIED}; valueset-c80-doc-typecodes-R4.json",
        "official",
    ),
    TermEntry(LOINC, "30745-4", "Chest X-ray", C80, "official"),
    TermEntry(LOINC, "36643-5", "Chest X-ray 2 views", C80, "official"),
    TermEntry(LOINC, "24627-2", "Chest CT", C80, "official"),
    TermEntry(LOINC, "29252-4", "Chest CT WO contrast", C80, "official"),
    # HL7 terminology used in every Bundle
    TermEntry(
        OBSERVATION_CATEGORY, "imaging", "Imaging", "FHIR R4 spec, observation-category", "official"
    ),
    TermEntry(V2_0074, "RAD", "Radiology", f"{VERIFIED} (FHIR R4 example f201)", "official"),
    TermEntry(
        V3_OBSERVATION_VALUE,
        "AIAST",
        "Artificial Intelligence asserted",
        "HL7 AI Transparency on FHIR IG, ValueSet ProvenanceVS "
        "(hl7.org/fhir/uv/aitransparency/2026Jan/ValueSet-ProvenanceVS.html)",
        "IG",
    ),
    TermEntry(
        V2_0203,
        "ACSN",
        "Accession ID",
        "FHIR R4 spec, identifier-type value set (v2-0203)",
        "official",
    ),
    TermEntry(
        PROVENANCE_PARTICIPANT_TYPE,
        "assembler",
        "Assembler",
        "FHIR R4 spec, CodeSystem provenance-participant-type",
        "official",
    ),
)

DO_NOT_USE: frozenset[tuple[str, str]] = frozenset(
    {
        (SNOMED, "416940007"),  # Past history of procedure: NOT a nodule (verified-codes.tsv)
        (SNOMED, "128404006"),  # Right heart failure: NOT cardiac amyloidosis (verified-codes.tsv)
    }
)

UNCODED_CONCEPTS: dict[str, str] = {
    "lung_nodule": (
        "786838002 'Nodule of lung' has one IG source and a conflicting mapping (300928002) "
        "in verified-codes.tsv; not confirmed, so emitted as text only"
    ),
    "both_lower_lobes": "no single code: expands to the right and left lower lobe",
}

_BY_KEY: dict[tuple[str, str], TermEntry] = {(t.system, t.code): t for t in TERMS}


def lookup(system: str, code: str) -> TermEntry | None:
    """The table entry for a code, or None."""
    return _BY_KEY.get((system, code))


def is_known(system: str, code: str) -> bool:
    """True when the code is in the verified table."""
    return (system, code) in _BY_KEY


def require(system: str, code: str) -> TermEntry:
    """The table entry for a code; TerminologyError when unknown or on the do-not-use list."""
    if (system, code) in DO_NOT_USE:
        raise TerminologyError(f"{system}|{code} is on the do-not-use list")
    entry = lookup(system, code)
    if entry is None:
        raise TerminologyError(f"{system}|{code} is not in the verified code table")
    return entry
