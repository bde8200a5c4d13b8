"""What the insights step found in one report: plain data, no report text except evidence quotes.

Every item carries its evidence (`Span`: the quote as written and its code-point offsets into
the report text). Dates are the report's effective date plus the stated interval
(`due`/`due_start`/`due_end`); the interval itself is kept as ISO 8601 durations.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mappings.report import Measurement

FollowUpKind = Literal["imaging", "biopsy", "consultation", "other"]
MismatchKind = Literal["laterality", "sex", "age", "exam_type"]


class Span(BaseModel):
    """Evidence: `quote` is `text[start:end]` of the report."""

    model_config = ConfigDict(frozen=True)

    quote: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class FollowUp(BaseModel):
    """A recommended future action of this report (ServiceRequest)."""

    model_config = ConfigDict(frozen=True)

    kind: FollowUpKind
    modality: str | None = None
    """DICOM modality code (CT, MR, US, MG, CR, NM, PT) when the report states one."""
    procedure_text: str
    interval: tuple[str, ...] = ()
    """As stated: one ISO 8601 duration ("P3M"), two for a range, none without a time frame."""
    due: date | None = None
    due_start: date | None = None
    due_end: date | None = None
    conditional: bool = False
    guideline: str | None = None
    evidence: Span


class CriticalResult(BaseModel):
    """A finding of the critical list stated as present in this exam (Flag)."""

    model_config = ConfigDict(frozen=True)

    finding: str
    """The id on the critical-findings list (`mappings/insights/critical.yaml`)."""
    evidence: Span


class ResultCommunication(BaseModel):
    """A statement that this result was passed on directly (Communication)."""

    model_config = ConfigDict(frozen=True)

    recipient: str | None = None
    time: str | None = None
    """The time as written ("03:25 on 02/03/2025", "21.47 uur")."""
    sent: datetime | None = None
    """The date and time stated, when both are unambiguous ("on 2025-03-10 at 09:40"; naive:
    local time as written)."""
    evidence: Span


class RadsCategory(BaseModel):
    """A RADS category this report assigns (Observation)."""

    model_config = ConfigDict(frozen=True)

    system: str
    """BI-RADS, BI-RADS density, Lung-RADS, PI-RADS, TI-RADS, LI-RADS or O-RADS."""
    category: str
    """As the system writes it: "4A", "c", "2S", "TR4", "LR-M"."""
    side: Literal["left", "right"] | None = None
    evidence: Span


class Mismatch(BaseModel):
    """The report contradicts its order or its patient (DetectedIssue)."""

    model_config = ConfigDict(frozen=True)

    kind: MismatchKind
    expected: str
    """The order's or the patient's side: "left (order: XR KNEE LEFT)", "male", "67 years"."""
    found: str
    """What the report says instead: "right", "uterus", "57 years", "abdomen"."""
    evidence: Span


class SizedFinding(BaseModel):
    """A size stated for a finding in this exam (Observation with size components): the finding
    phrase as written ("9 mm hypodense lesion in segment 4" gives "hypodense lesion in segment
    4"), the size (`workers.measurements`) and the size's evidence."""

    model_config = ConfigDict(frozen=True)

    finding: str
    size: Measurement
    evidence: Span


class Insights(BaseModel):
    """Everything the insights step found in one report."""

    model_config = ConfigDict(frozen=True)

    followups: tuple[FollowUp, ...] = ()
    critical: tuple[CriticalResult, ...] = ()
    communications: tuple[ResultCommunication, ...] = ()
    rads: tuple[RadsCategory, ...] = ()
    mismatches: tuple[Mismatch, ...] = ()
    sizes: tuple[SizedFinding, ...] = ()

    def empty(self) -> bool:
        """True when nothing was found."""
        return not (
            self.followups
            or self.critical
            or self.communications
            or self.rads
            or self.mismatches
            or self.sizes
        )
