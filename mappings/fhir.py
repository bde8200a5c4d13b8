"""FHIR R4 in and out: `reports_from_fhir` (DiagnosticReport/Bundle -> Report) and
`build_bundle` (Extraction -> transaction Bundle). See `fhir_in` and `fhir_out`."""

from __future__ import annotations

from mappings.fhir_in import report_keys_from_fhir, reports_from_fhir
from mappings.fhir_out import EVIDENCE_EXTENSION, EXTENSION_BASE, build_bundle, deterministic_id

__all__ = [
    "EVIDENCE_EXTENSION",
    "EXTENSION_BASE",
    "build_bundle",
    "deterministic_id",
    "report_keys_from_fhir",
    "reports_from_fhir",
]
