"""What `radbridge eval` measured: per task (a template, or the NegEx assertion set), per stage,
the metrics, the timing and the wrong labels (ids and labels only, never report text)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from conformance.metrics import Label, LabelMetrics, McNemar, VariableSpec

StageName = Literal["rules", "llm", "hybrid"]
ALL_STAGES: tuple[StageName, ...] = ("rules", "llm", "hybrid")
MAX_ERRORS_LISTED = 500
Progress = Callable[[], None]


@dataclass(frozen=True)
class Timing:
    """Cost of one stage over the dataset."""

    reports: int
    seconds_total: float
    seconds_per_report_mean: float | None
    seconds_per_report_median: float | None
    completion_tokens: int
    decode_seconds: float
    tokens_per_second: float | None


@dataclass(frozen=True)
class CellError:
    """One wrong label (ids and labels only, never report text)."""

    report_id: str
    variable_id: str
    gold: Label
    predicted: Label


@dataclass(frozen=True)
class StageResult:
    """One stage's metrics, timing and wrong labels on one task."""

    stage: str
    metrics: LabelMetrics
    timing: Timing
    errors: tuple[CellError, ...]
    errors_total: int
    model: str | None = None
    failed: tuple[str, ...] = ()
    """Ids of reports whose extraction produced no valid output (scored as not mentioned)."""


@dataclass(frozen=True)
class StageComparison:
    """Two stages on the same reports: agreement and McNemar tests."""

    a: str
    b: str
    agreement: float | None
    exact: McNemar
    variables: dict[str, McNemar]


@dataclass(frozen=True)
class TaskResult:
    """One template (or the NegEx assertion set) evaluated with one or more stages."""

    task: str
    title: str
    kind: Literal["template", "assertion"]
    variables: tuple[VariableSpec, ...]
    stages: dict[str, StageResult]
    comparisons: tuple[StageComparison, ...]


@dataclass(frozen=True)
class EvaluationResult:
    """What `radbridge eval` measured."""

    dataset: str
    format: str
    created: str
    model: str | None
    resamples: int
    seed: int
    tasks: tuple[TaskResult, ...]
    notes: tuple[str, ...] = ()
