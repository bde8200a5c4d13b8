"""What flows in (`Report`) and what the extraction produced (`Extraction`, `FindingValue`).

Offsets are Unicode code-point offsets into `Report.text`, the normalised report text
(lines joined with "\n", no carriage returns, escape sequences resolved).
"""

from __future__ import annotations

from datetime import date, datetime
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
    """One patient identifier (PID-3 repetition or FHIR Patient identifier). HL7: `assigner` is
    CX-4.1 (namespace id), `assigner_id`/`assigner_id_type` CX-4.2/4.3 (e.g. an OID and ISO);
    FHIR: `system` as sent."""

    model_config = ConfigDict(frozen=True)

    value: str
    assigner: str | None = None
    type_code: str | None = None
    system: str | None = None
    assigner_id: str | None = None
    assigner_id_type: str | None = None


class EntityIdentifier(BaseModel):
    """An HL7 EI (OBR-2 placer / OBR-3 filler order number) or a FHIR identifier: the value and
    who assigned it (EI-2 namespace, EI-3/4 universal id and its type; FHIR: `system`)."""

    model_config = ConfigDict(frozen=True)

    value: str
    namespace: str | None = None
    universal_id: str | None = None
    universal_id_type: str | None = None
    system: str | None = None
    type_code: str | None = None


HL7Field = tuple[tuple[tuple[str, ...], ...], ...]
"""One HL7v2 field as the source sent it, unescaped: repetitions x components x subcomponents."""


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
    placer_order: EntityIdentifier | None = None
    filler_order: EntityIdentifier | None = None
    report_identifiers: tuple[EntityIdentifier, ...] = Field(
        default=(), description="FHIR input: the DiagnosticReport's identifiers as sent"
    )
    subject_reference: str | None = Field(
        default=None, description="FHIR input: DiagnosticReport.subject.reference as sent"
    )
    patient_name: HL7Field = Field(default=(), description="HL7 input: PID-5 as sent (PHI)")
    visit: tuple[HL7Field, ...] | None = Field(
        default=None, description="HL7 input: the PV1 segment's fields (PV1-1 first), if any"
    )
    modality: str | None = None
    body_part: str | None = None
    patient_sex: Literal["male", "female", "other", "unknown"] | None = Field(
        default=None, description="PID-8 / Patient.gender (the insights' sex check)"
    )
    birth_date: date | None = Field(
        default=None,
        description="PID-7 / Patient.birthDate to the day; None when absent, partial or impossible",
    )
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

SizeUnit = Literal["mm", "cm"]
MM_PER_UNIT: dict[str, float] = {"mm": 1.0, "cm": 10.0}


class Measurement(BaseModel):
    """A size stated for one instance of a finding in this exam ("3.2 x 2.1 cm"): the
    dimensions in the order written and the unit as written (`workers.measurements`)."""

    model_config = ConfigDict(frozen=True)

    dims: tuple[float, ...] = Field(min_length=1, max_length=3)
    unit: SizeUnit
    evidence: Evidence

    @property
    def dims_mm(self) -> tuple[float, ...]:
        """The dimensions in millimetres (cm x 10), rounded to 0.01 mm."""
        return tuple(round(d * MM_PER_UNIT[self.unit], 2) for d in self.dims)


class StatedGrade(BaseModel):
    """A grade or severity stated for a finding: the template attribute (`kl_grade`, `grade`,
    `severity` ...), its value (an integer in the attribute's scale, or the option id) and, as
    `evidence`, the words as the report writes them ("KL 3", "graad III", "matige")."""

    model_config = ConfigDict(frozen=True)

    attribute: str
    value: int | str
    evidence: Evidence

    @property
    def text(self) -> str:
        """The grade as written."""
        return self.evidence.quote


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
    sizes: tuple[Measurement, ...] = ()
    """Sizes stated for this finding (presence variables whose template declares `size_mm`),
    one per instance and measurement, in text order."""
    sides: tuple[str, ...] = ()
    """Sides stated for this finding (presence variables whose template declares `side`): the
    side attribute's option ids (`right`, `left`, `bilateral`, ...), each once."""
    grades: tuple[StatedGrade, ...] = ()
    """Grades and severities stated for this finding (presence variables whose template declares
    a grade attribute, `workers.grades`), in text order, each (attribute, value) once."""


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
