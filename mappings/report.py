"""What flows in (`Report`) and what the extraction produced (`Extraction`, `FindingValue`).

Offsets are Unicode code-point offsets into `Report.text`, the normalised report text
(lines joined with "\n", no carriage returns, escape sequences resolved).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ResultStatus(StrEnum):
    """HL7 OBR-25 result status as radbridge uses it (table 0123 subset)."""

    PRELIMINARY = "P"
    FINAL = "F"
    CORRECTED = "C"


class Coding(BaseModel):
    """A code as received from the source message (not necessarily verified)."""

    model_config = ConfigDict(frozen=True)

    code: str | None = None
    display: str | None = None
    system: str | None = None


class PatientIdentifier(BaseModel):
    """One patient identifier (PID-3 repetition or FHIR Patient identifier)."""

    model_config = ConfigDict(frozen=True)

    value: str
    assigner: str | None = None
    type_code: str | None = None
    system: str | None = None


class Section(BaseModel):
    """A named section of the normalised text: `text[start:end]`."""

    model_config = ConfigDict(frozen=True)

    name: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class Report(BaseModel):
    """One radiology report (one OBR of an ORU^R01, or one FHIR DiagnosticReport)."""

    model_config = ConfigDict(frozen=True)

    source_format: Literal["hl7v2", "fhir"]
    report_id: str = Field(
        description="filename-safe id: DiagnosticReport id, or MSH-10-OBR set id"
    )
    message_control_id: str | None = None
    hl7_version: str | None = None
    obr_set_id: str | None = None
    fhir_resource_id: str | None = None
    sending_application: str | None = None
    sending_facility: str | None = None
    accession_number: str | None = None
    placer_order_number: str | None = None
    filler_order_number: str | None = None
    patient_identifiers: tuple[PatientIdentifier, ...] = ()
    procedure: Coding | None = None
    modality: str | None = None
    body_part: str | None = None
    result_status: ResultStatus = ResultStatus.FINAL
    observation_time: datetime | None = None
    language: str | None = Field(default=None, description="BCP-47 primary tag, e.g. 'en', 'nl'")
    text: str
    sections: tuple[Section, ...] = ()

    def section_text(self, name: str) -> str | None:
        """The text of the first section called `name`, or None."""
        for section in self.sections:
            if section.name == name:
                return self.text[section.start : section.end]
        return None


class FindingStatus(StrEnum):
    """The assertion of one extracted variable."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"
    NOT_MENTIONED = "not_mentioned"


class Stage(StrEnum):
    """Which stage produced a value."""

    RULES = "rules"
    LLM = "llm"
    HYBRID = "hybrid"


class Evidence(BaseModel):
    """The verbatim quote a value rests on, and where it was found in `Report.text`."""

    model_config = ConfigDict(frozen=True)

    quote: str
    start: int | None = Field(default=None, ge=0)
    end: int | None = Field(default=None, ge=0)

    @property
    def verified(self) -> bool:
        """True when the quote was found in the report text."""
        return self.start is not None and self.end is not None


ScalarValue = str | int | float | bool | None


class FindingValue(BaseModel):
    """One variable of a template, as extracted from one report.

    `status` is the assertion. Presence variables: present / absent / uncertain /
    not_mentioned, and `value` = the qualifier option id or None. Ordinal, number and enum
    variables: `present` when the value is stated, `not_mentioned` when not, `uncertain` when the
    evidence check downgraded it; `value` = int (ordinal), float (number) or option id (enum),
    `unit` = its UCUM code (number). `locations` holds template location ids (laterality / lobe)
    where stated. `flags` explains downgrades, e.g. "evidence_not_found", "evidence_off_topic",
    "value_invalid".
    """

    model_config = ConfigDict(frozen=True)

    variable_id: str
    status: FindingStatus
    value: ScalarValue = None
    unit: str | None = None
    locations: tuple[str, ...] = ()
    evidence: Evidence | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    stage: Stage = Stage.LLM
    flags: tuple[str, ...] = ()


class ModelInfo(BaseModel):
    """The model that produced an extraction (becomes the FHIR Device)."""

    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str
    version: str | None = None


class ExtractionTimings(BaseModel):
    """Cost of one extraction."""

    model_config = ConfigDict(frozen=True)

    seconds: float = 0.0
    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0
    completion_tokens: int = 0
    forced_tokens: int = 0


class Extraction(BaseModel):
    """All variables of one template extracted from one report."""

    model_config = ConfigDict(frozen=True)

    report_id: str
    template_id: str
    template_version: str
    model: ModelInfo
    stage: Stage
    values: tuple[FindingValue, ...]
    created: datetime
    timings: ExtractionTimings = ExtractionTimings()

    def value_of(self, variable_id: str) -> FindingValue | None:
        """The extracted value of `variable_id`, or None when the template has no such variable."""
        for value in self.values:
            if value.variable_id == variable_id:
                return value
        return None
