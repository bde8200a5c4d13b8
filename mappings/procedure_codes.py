"""The procedure code of a follow-up recommendation (ServiceRequest.code, issue 20 item 2).

An imaging follow-up whose clause (the part of its sentence between punctuation that holds its
action) names one body region ("Recommend low-dose chest CT in 3 months", "echo schildklier",
"MRT der Prostata") and whose modality is known gets the LOINC radiology code of that region and
modality ("Chest CT" 24627-2), from the FHIR R4 LOINC document codes radbridge installs (c80);
otherwise the SNOMED CT procedure of the modality (and region where the GPS has one: "Computed
tomography of head"), e.g. 77477000 Computerized axial tomography. Two regions in one text
("CT chest and abdomen", other than abdomen and pelvis) name none. A biopsy gets the SNOMED CT
biopsy of its guidance (277667006 Ultrasound guided biopsy), else of its region where the GPS
has one (breast, liver), else 86273004 Biopsy. Consultations and other actions stay text only
(no verified code). Every code is in `mappings.terminology.TERMS`.
"""

from __future__ import annotations

import re
from typing import Any

from mappings import terminology as term

_REGIONS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (region, re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE))
    for region, words in (
        (
            "abdomen_pelvis",
            r"abdomen (?:and|&|/|en|und) (?:the )?pelvis|abdominopelvic|buik en bekken|"
            r"abdomen und becken|abdomen/becken",
        ),
        (
            "chest",
            r"chest|thorax|thoracic|lungs?|longen|long(?![\w-])|lunge[n]?|thorakal\w*|thoracaal",
        ),
        ("abdomen", r"abdomen|abdominal|buik|bovenbuik|bauch|oberbauch|abdominell\w*"),
        ("pelvis", r"pelvis|pelvic|bekken|becken|kleine[n]? becken"),
        ("head", r"head|brain|cranial|hersenen|schedel|schädel|kopf|hirn|cerebr\w*|neurocranium"),
        ("breast", r"breasts?|mamma[e]?|borst(?:en)?|brust|mammograph\w*|mammogra\w*"),
        ("thyroid", r"thyroid|schildklier|schilddrüse\w*"),
        ("neck", r"neck|hals(?:es)?"),
        ("liver", r"liver|hepatic|lever|leber"),
        ("kidney", r"kidneys?|renal|nier(?:en)?|niere[n]?"),
        ("prostate", r"prostate|prostaat|prostata"),
        ("heart", r"heart|cardiac|hart|herz|kardial\w*|cardiaal"),
        ("adrenal", r"adrenals?|bijnier(?:en)?|nebenniere[n]?"),
        ("pancreas", r"pancreas|pancreatic|pankreas"),
        ("knee", r"knee|knie"),
        ("hip", r"hip|heup|hüfte"),
    )
)
_KIND = {"CT": "CT", "MR": "MR", "US": "US", "MG": "MG", "CR": "XR", "DX": "XR", "PT": "PT"}
LOINC_PROCEDURES: dict[tuple[str, str], str] = {
    ("chest", "CT"): "24627-2",
    ("chest", "MR"): "24629-8",
    ("chest", "US"): "24630-6",
    ("chest", "XR"): "30745-4",
    ("abdomen", "CT"): "41806-1",
    ("abdomen", "MR"): "24556-3",
    ("abdomen", "US"): "24558-9",
    ("abdomen", "XR"): "37636-8",
    ("abdomen_pelvis", "CT"): "44115-4",
    ("pelvis", "CT"): "24865-8",
    ("pelvis", "MR"): "24867-4",
    ("pelvis", "US"): "24869-0",
    ("pelvis", "XR"): "28561-9",
    ("head", "CT"): "24725-4",
    ("head", "MR"): "24590-2",
    ("head", "PT"): "44138-6",
    ("breast", "MR"): "30794-2",
    ("breast", "US"): "24601-7",
    ("breast", "MG"): "36625-2",
    ("thyroid", "MR"): "42300-4",
    ("thyroid", "US"): "25010-0",
    ("neck", "CT"): "36051-1",
    ("neck", "MR"): "24839-3",
    ("neck", "US"): "24842-7",
    ("neck", "XR"): "37639-2",
    ("liver", "CT"): "24814-6",
    ("liver", "MR"): "36046-1",
    ("liver", "US"): "28614-6",
    ("kidney", "MR"): "36033-9",
    ("kidney", "US"): "38036-0",
    ("prostate", "CT"): "36057-8",
    ("prostate", "MR"): "30675-3",
    ("prostate", "US"): "24884-9",
    ("heart", "CT"): "58744-4",
    ("heart", "MR"): "24748-6",
    ("adrenal", "CT"): "36930-6",
    ("adrenal", "MR"): "36931-4",
    ("adrenal", "US"): "69277-2",
    ("pancreas", "CT"): "24857-5",
    ("pancreas", "MR"): "36052-9",
    ("pancreas", "US"): "24859-1",
    ("knee", "CT"): "36037-0",
    ("knee", "MR"): "24802-1",
    ("knee", "XR"): "28565-0",
    ("hip", "CT"): "36014-9",
    ("hip", "MR"): "36013-1",
    ("hip", "US"): "24760-1",
    ("hip", "XR"): "24762-7",
}
"""(region, modality kind) -> LOINC "<Region> <modality>" of the FHIR R4 c80 document codes."""
SNOMED_REGION_PROCEDURES: dict[tuple[str, str], str] = {
    ("head", "CT"): "303653007",  # Computed tomography of head
    ("breast", "US"): "47079000",  # Ultrasonography of breast
    ("breast", "MR"): "241615005",  # Magnetic resonance imaging of breast
    ("heart", "MR"): "241620005",  # Magnetic resonance imaging of heart
}
SNOMED_MODALITY_PROCEDURES: dict[str, str] = {
    "CT": "77477000",  # Computerized axial tomography
    "MR": "113091000",  # Magnetic resonance imaging
    "US": "16310003",  # Diagnostic ultrasonography
    "MG": "71651007",  # Mammography
    "XR": "363680008",  # Radiographic imaging procedure
}
SNOMED_GUIDED_BIOPSY: dict[str, str] = {
    "US": "277667006",  # Ultrasound guided biopsy
    "CT": "277591006",  # Computed tomography guided biopsy
    "MR": "277592004",  # Magnetic resonance imaging guided biopsy
}
SNOMED_REGION_BIOPSY: dict[str, str] = {
    "breast": "122548005",  # Biopsy of breast
    "liver": "86259008",  # Biopsy of liver
}
BIOPSY = "86273004"
"""SNOMED CT Biopsy (procedure)."""


def body_region(text: str) -> str | None:
    """The one body region a follow-up's text names (None: none, or several)."""
    found = {region for region, pattern in _REGIONS if pattern.search(text)}
    if "abdomen_pelvis" in found:
        found -= {"abdomen", "pelvis"}
    return found.pop() if len(found) == 1 else None


_CLAUSE_END = re.compile(r"[,;:.()\n]")


def action_clause(sentence: str, action: str) -> str:
    """The clause of `sentence` (the follow-up's evidence) that holds its action's words
    ("Recommend low-dose chest CT in 3 months" for "CT"); the sentence when not found."""
    at = sentence.casefold().find(action.casefold())
    if not action or at < 0:
        return sentence
    starts = [m.end() for m in _CLAUSE_END.finditer(sentence, 0, at)]
    end = _CLAUSE_END.search(sentence, at + len(action))
    return sentence[starts[-1] if starts else 0 : end.start() if end else len(sentence)]


def procedure_codings(
    kind: str, modality: str | None, action: str, sentence: str = ""
) -> list[dict[str, Any]]:
    """The procedure coding of a follow-up (empty: text only): `action` its words ("CT"),
    `sentence` its evidence, whose clause around the action names the region."""
    family = _KIND.get(modality or "")
    region = body_region(action_clause(sentence, action) if sentence else action)
    if kind == "biopsy":
        code = SNOMED_GUIDED_BIOPSY.get(family or "") or SNOMED_REGION_BIOPSY.get(region or "")
        return [term.coding(term.SNOMED, code or BIOPSY)]
    if kind != "imaging" or family is None:
        return []
    if family == "MG":
        region = "breast"
    if region is not None and (region, family) in LOINC_PROCEDURES:
        return [term.coding(term.LOINC, LOINC_PROCEDURES[(region, family)])]
    code = SNOMED_REGION_PROCEDURES.get((region or "", family)) or SNOMED_MODALITY_PROCEDURES.get(
        family
    )
    return [term.coding(term.SNOMED, code)] if code else []
