"""Every code radbridge can emit is verified against ../shared/terminology or cited."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mappings import terminology as term
from mappings.errors import TerminologyError
from mappings.template import load_builtin_templates, template_codes
from mappings.terminology_tables import code_problems, snomed_gps

# Codes not in the SNOMED GPS 2019 file but in verified-codes.tsv (strength column there).
VERIFIED_ONLY_SNOMED = {
    "95436008",
    "1217294009",
    "3341006",
    "44029006",
    "42400003",
    "266005",
    "41224006",
}
# HL7 terminology codes, cited in the table (FHIR R4 spec / HL7 IG pages found with `search`).
HL7_SYSTEMS = {
    term.OBSERVATION_CATEGORY,
    term.V2_0074,
    term.V2_0203,
    term.V3_OBSERVATION_VALUE,
    term.PROVENANCE_PARTICIPANT_TYPE,
    term.FLAG_CATEGORY,
}
# DICOM codes (the modality of a follow-up, issue 20), cited in the table (CID 29, two sources).
DICOM_SYSTEMS = {term.DCM}


@pytest.fixture(scope="module")
def gps(shared_dir: Path) -> dict[str, str]:
    with (shared_dir / "terminology" / "snomed-gps-2019.tsv").open(encoding="utf-8") as fh:
        return {row["sctid"]: row["display"] for row in csv.DictReader(fh, delimiter="\t")}


@pytest.fixture(scope="module")
def verified(shared_dir: Path) -> str:
    return (shared_dir / "terminology" / "verified-codes.tsv").read_text("utf-8")


@pytest.fixture(scope="module")
def loinc(shared_dir: Path) -> set[str]:
    valueset = json.loads(
        (shared_dir / "terminology" / "valueset-c80-doc-typecodes-R4.json").read_text("utf-8")
    )
    codes = {c["code"] for inc in valueset["compose"]["include"] for c in inc.get("concept", [])}
    return codes


def test_every_snomed_code_is_verified(gps: dict[str, str], verified: str) -> None:
    for entry in term.TERMS:
        if entry.system != term.SNOMED:
            continue
        if entry.code in gps:
            assert gps[entry.code] == entry.display, entry.code
        else:
            assert entry.code in VERIFIED_ONLY_SNOMED, entry.code
            line = next(
                row
                for row in verified.splitlines()
                if f"\t{entry.code}\t" in row
                or f"\t{entry.code} /" in row
                or f"/ {entry.code}\t" in row
            )
            assert "do not use" not in line


def test_every_loinc_code_is_in_the_r4_value_set_or_cited(loinc: set[str]) -> None:
    """Document codes come from the c80 value set; a measurement code (e.g. LVEF by MR) is not a
    document code and must cite the public source it was confirmed in (repo path @ commit)."""
    for entry in term.TERMS:
        if entry.system == term.LOINC and entry.code not in loinc:
            assert term.C80 not in entry.source, entry.code
            assert "@" in entry.source, f"{entry.code}: cite repo/path@commit"


def test_every_other_code_is_cited() -> None:
    for entry in term.TERMS:
        assert entry.source
        assert entry.system in {term.SNOMED, term.LOINC} | HL7_SYSTEMS | DICOM_SYSTEMS


def test_do_not_use_codes_are_refused(verified: str) -> None:
    for system, code in term.DO_NOT_USE:
        assert code in verified
        assert not term.is_known(system, code)
        with pytest.raises(TerminologyError):
            term.require(system, code)


def test_every_template_code_is_in_the_installed_tables_or_cited() -> None:
    """Template codes are checked against the SNOMED CT / LOINC tables radbridge installs, or a
    cited source, never against mappings/terminology.py (issue 23 item 3)."""
    for template in load_builtin_templates().values():
        for field, code in template_codes(template):
            assert code_problems(code.system, code.code, code.display, code.source) == [], field
        for variable in template.variables:
            if variable.code is None:
                assert variable.uncoded_reason, variable.id


def test_the_installed_gps_agrees_with_the_2019_gps_on_every_template_code(
    gps: dict[str, str],
) -> None:
    """The GPS radbridge installs (2020) gives each built-in SNOMED CT code the FSN of the 2019
    GPS in ../shared the codes were first verified in."""
    installed = snomed_gps()
    for template in load_builtin_templates().values():
        for field, code in template_codes(template):
            if code.system == term.SNOMED and code.code in gps:
                assert installed[code.code] == gps[code.code], field
