"""Build an Extraction from a hand-written expectation (tests/fixtures/hl7v2/NAME.expected.json)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mappings.report import (
    Evidence,
    Extraction,
    FindingStatus,
    FindingValue,
    ModelInfo,
    Report,
    Stage,
)
from mappings.template import Template
from workers.evidence import locate_quote

GOLDEN_MODEL = ModelInfo(name="golden-fixture", sha256="0" * 64, version="fixture")
GOLDEN_TIME = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def expected_extraction(report: Report, template: Template, values: dict[str, Any]) -> Extraction:
    """The extraction a careful reader would make; quotes must occur in the report text."""
    findings = []
    for variable in template.variables:
        spec = values[variable.id]
        evidence = None
        if "quote" in spec:
            span = locate_quote(report.text, spec["quote"])
            assert span is not None, f"{report.report_id}: quote for {variable.id} not in text"
            evidence = Evidence(quote=report.text[span[0] : span[1]], start=span[0], end=span[1])
        findings.append(
            FindingValue(
                variable_id=variable.id,
                status=FindingStatus(spec["status"]),
                locations=tuple(spec.get("locations", ())),
                evidence=evidence,
                confidence=1.0 if evidence else None,
                stage=Stage.HYBRID,
            )
        )
    return Extraction(
        report_id=report.report_id,
        template_id=template.id,
        template_version=template.version,
        model=GOLDEN_MODEL,
        stage=Stage.HYBRID,
        values=tuple(findings),
        created=GOLDEN_TIME,
    )
