"""Modality codes: DICOM acquisition modalities (PS3.16 CID 29 "Acquisition Modality", the
values of Modality (0008,0060) for acquired images; tests/test_template_checks.py compares the
table with pydicom's copy of CID 29) and the families radbridge's routing groups them in."""

from __future__ import annotations

import difflib

ACQUISITION_MODALITIES = frozenset(
    {
        "AR", "BDUS", "BI", "BMD", "CFM", "CR", "CT", "DG", "DMS", "DX", "ECG", "EEG", "EMG",
        "EOG", "EPS", "ES", "GM", "HD", "IO", "IVOCT", "IVUS", "KER", "LEN", "LS", "MG", "MR",
        "NM", "OAM", "OCT", "OP", "OPM", "OPT", "OPTBSV", "OPTENF", "OPV", "OSS", "PA", "POS",
        "PT", "PX", "RESP", "RF", "RG", "RTIMAGE", "SM", "SRF", "TG", "US", "VA", "XA", "XC",
    }
)  # fmt: skip
"""CID 29 codes (system http://dicom.nema.org/resources/ontology/DCM)."""

# Modality families: the DICOM modality codes (and the non-DICOM words senders put in OBR-24 or
# a modality field: MRI, MRT, NMR, XR, RX, PET) a report or template may carry, by family.
MODALITY_FAMILIES: dict[str, str] = {
    "MR": "MR", "MRI": "MR", "MRT": "MR", "NMR": "MR",
    "CT": "CT",
    "CR": "XR", "DX": "XR", "XR": "XR", "RX": "XR", "RG": "XR",
    "US": "US", "NM": "NM", "PT": "PT", "PET": "PT", "MG": "MG", "XA": "XA", "RF": "XA",
}  # fmt: skip

_WORDS = {
    "ULTRASOUND": "US", "SONOGRAPHY": "US", "ULTRASONOGRAPHY": "US", "ECHO": "US",
    "MAMMOGRAPHY": "MG", "MAMMOGRAM": "MG", "RADIOGRAPHY": "DX", "XRAY": "DX", "X-RAY": "DX",
    "MAGNETIC RESONANCE": "MR", "COMPUTED TOMOGRAPHY": "CT", "SPECT": "NM",
    "FLUOROSCOPY": "RF", "ANGIOGRAPHY": "XA",
}  # fmt: skip


def modality_problem(code: str) -> str | None:
    """Why a template's `applies_to.modalities` entry is wrong (None: routing matches it)."""
    word = code.strip()
    if word in MODALITY_FAMILIES:
        return None
    upper = word.upper()
    if upper in MODALITY_FAMILIES:
        return f"{code!r}: modality codes are upper case ({upper!r})"
    if upper in ACQUISITION_MODALITIES:
        known = ", ".join(sorted(MODALITY_FAMILIES))
        return f"{code!r} is a DICOM modality routing does not match (it matches {known})"
    suggestion = _WORDS.get(upper) or next(
        iter(difflib.get_close_matches(upper, sorted(MODALITY_FAMILIES), n=1)), None
    )
    hint = f"; did you mean {suggestion}?" if suggestion else ""
    return f"{code!r} is not a DICOM modality code (CR, CT, DX, MG, MR, NM, PT, US, XA ...){hint}"
