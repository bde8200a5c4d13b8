"""`radbridge eval`: labelled reports -> extraction per stage -> metrics (`conformance.metrics`).

Datasets (the first detector that matches wins, `DATASET_FORMATS`):
- the NegEx annotation file (`Annotations-1-120.txt`, `rsAnnotations-1-120-random.txt`) or its
  folder: assertion detection of stage 1 (`workers.context.assess`) on each annotated sentence;
- the DRAGON sample folder: converted by `conformance.dragon.load_dragon_set` (records in the
  JSONL form below, each task with its template imported from its llm_extractinator task file;
  the dataset carries those templates and notes on the tasks left out);
- otherwise JSONL in the form of DESIGN.md 'Contracts': one report per line,
  `{"id", "text", "language", "template", "gold": {variable_id: value}}` with optional `_pairs`
  (lesion–location) and `_episodes` (diagnosis–episode) in `gold`, optional `patient`/`time`.

Scoring choices (beyond `conformance.metrics`):
- locations are compared as single sites: `bilateral`, `both_lower_lobes` … are expanded with
  `Template.sites` on both sides; lesion–location pairs count only for variables that declare
  locations (a `[variable, null]` pair means present without a stated location);
- diagnosis–episode pairs: one per present finding of a variable with a qualifier, the
  episode or null when none is stated (as lesion–location pairs);
- a typed value (ordinal/number/enum) is scored by its value even when the evidence check made
  it `uncertain`: it is still emitted, as a preliminary value.

No report text leaves this module: results carry ids, variable ids and labels only.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from rich.table import Table

from adapter.settings import Settings
from conformance.errors import ConverterUnavailable, DatasetError, EvaluationError
from conformance.metrics import (
    NO,
    NOT_MENTIONED,
    PRESENCE_CLASSES,
    YES,
    Kind,
    Label,
    LabelMetrics,
    McNemar,
    Pair,
    VariableSpec,
    evaluate_labels,
    labels_equal,
    mcnemar,
    report_correct,
)
from mappings.errors import TemplateError
from mappings.report import Extraction, FindingStatus, Report
from mappings.template import Template, Variable, VariableType

StageName = Literal["rules", "llm", "hybrid"]
ALL_STAGES: tuple[StageName, ...] = ("rules", "llm", "hybrid")
PAIRS_KEY = "_pairs"
EPISODES_KEY = "_episodes"
MAX_ERRORS_LISTED = 500
Progress = Callable[[], None]


@dataclass(frozen=True)
class LabelledReport:
    """One gold-labelled case: a report (or, for NegEx, one annotated sentence)."""

    id: str
    source: str
    text: str
    language: str | None
    template: str
    gold: dict[str, Label]
    pairs: frozenset[Pair] | None = None
    episodes: frozenset[Pair] | None = None
    patient: str | None = None
    time: str | None = None
    span: tuple[int, int] | None = None


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: its format and its cases."""

    path: Path
    format: str
    reports: tuple[LabelledReport, ...]
    templates: Mapping[str, Template] | None = None  # the dataset's own (DRAGON), else built-in
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------
# Gold values (Contracts form) and predicted values in the same form


KINDS: dict[VariableType, Kind] = {
    VariableType.PRESENCE: "presence",
    VariableType.ORDINAL: "ordinal",
    VariableType.NUMBER: "number",
    VariableType.ENUM: "enum",
}


def _spec(variable: Variable) -> VariableSpec:
    kind = KINDS[variable.type]
    if variable.type is VariableType.ORDINAL and variable.scale is not None:
        return VariableSpec(
            variable.id, kind, tuple(range(variable.scale.min, variable.scale.max + 1))
        )
    if variable.type is VariableType.ENUM:
        return VariableSpec(variable.id, kind, tuple(option.id for option in variable.options))
    return VariableSpec(variable.id, kind)


def variable_specs(template: Template, tolerance: float = 0.0) -> tuple[VariableSpec, ...]:
    """The metric core's view of a template's variables."""
    specs = []
    for variable in template.variables:
        spec = _spec(variable)
        if spec.kind == "number":
            spec = VariableSpec(spec.id, spec.kind, spec.classes, tolerance)
        specs.append(spec)
    return tuple(specs)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def gold_label(variable: Variable, value: object) -> Label:
    """A gold value checked against the variable (ValueError says what is wrong)."""
    if value == NOT_MENTIONED:
        return NOT_MENTIONED
    kind = variable.type
    if kind is VariableType.PRESENCE:
        if value not in PRESENCE_CLASSES:
            raise ValueError(
                f"{variable.id}: {value!r} is not one of {', '.join(PRESENCE_CLASSES)}"
            )
        return str(value)
    if kind is VariableType.ORDINAL:
        if not _is_int(value):
            raise ValueError(f"{variable.id}: ordinal gold must be an integer or 'not_mentioned'")
        assert isinstance(value, int)
        scale = variable.scale
        if scale is not None and not scale.min <= value <= scale.max:
            raise ValueError(
                f"{variable.id}: {value} is outside the scale {scale.min}..{scale.max}"
            )
        return value
    if kind is VariableType.NUMBER:
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{variable.id}: number gold must be a number or 'not_mentioned'")
        return float(value)
    options = [option.id for option in variable.options]
    if value not in options:
        raise ValueError(f"{variable.id}: {value!r} is not an option ({', '.join(options)})")
    return str(value)


def predicted_label(variable: Variable, value_status: FindingStatus, value: object) -> Label:
    """One extracted value as a label in the gold form."""
    if value_status is FindingStatus.NOT_MENTIONED:
        return NOT_MENTIONED
    kind = variable.type
    if kind is VariableType.PRESENCE:
        return value_status.value
    if value is None or isinstance(value, bool):
        return NOT_MENTIONED
    if kind is VariableType.ORDINAL:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return NOT_MENTIONED
        return int(number) if number.is_integer() else number
    if kind is VariableType.NUMBER:
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return NOT_MENTIONED
    return str(value)


def _sites(template: Template, location_id: str | None) -> list[str | None]:
    if location_id is None:
        return [None]
    try:
        return [site.id for site in template.sites(location_id)]
    except KeyError:
        return [location_id]


def _has_locations(template: Template, variable_id: str) -> bool:
    try:
        return bool(template.variable(variable_id).locations)
    except KeyError:
        return False


def normalise_pairs(template: Template, pairs: Iterable[Pair]) -> frozenset[Pair]:
    """Lesion–location pairs as single sites, for variables that declare locations."""
    return frozenset(
        (variable_id, site)
        for variable_id, location in pairs
        if _has_locations(template, variable_id)
        for site in _sites(template, location)
    )


def predicted_pairs(extraction: Extraction, template: Template) -> frozenset[Pair]:
    """(variable, location) for every present finding of a variable with locations."""
    pairs: list[Pair] = []
    for value in extraction.values:
        if value.status is not FindingStatus.PRESENT:
            continue
        if value.locations:
            pairs += [(value.variable_id, location) for location in value.locations]
        else:
            pairs.append((value.variable_id, None))
    return normalise_pairs(template, pairs)


def predicted_episodes(extraction: Extraction, template: Template) -> frozenset[Pair]:
    """(variable, qualifier option or None) for every present finding with a qualifier."""
    episodes: set[Pair] = set()
    for value in extraction.values:
        try:
            variable = template.variable(value.variable_id)
        except KeyError:
            continue
        if variable.qualifier is not None and value.status is FindingStatus.PRESENT:
            episodes.add((variable.id, value.value if isinstance(value.value, str) else None))
    return frozenset(episodes)


def predicted_labels(extraction: Extraction, template: Template) -> dict[str, Any]:
    """An Extraction in the gold form: variable labels plus `_pairs` and `_episodes`."""
    labels: dict[str, Any] = {}
    for variable in template.variables:
        value = extraction.value_of(variable.id)
        labels[variable.id] = (
            NOT_MENTIONED if value is None else predicted_label(variable, value.status, value.value)
        )
    labels[PAIRS_KEY] = predicted_pairs(extraction, template)
    labels[EPISODES_KEY] = predicted_episodes(extraction, template)
    return labels


# ---------------------------------------------------------------------------------------------
# Loading


def _pair_list(template: Template, raw: object, key: str) -> list[Pair]:
    if not isinstance(raw, list):
        raise ValueError(f"{key} must be a list of [variable_id, value] pairs")
    pairs: list[Pair] = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not (item[1] is None or isinstance(item[1], str))
        ):
            raise ValueError(f"{key}: {item!r} is not a [variable_id, id-or-null] pair")
        variable_id, attribute = item
        try:
            variable = template.variable(variable_id)
        except KeyError:
            raise ValueError(f"{key}: unknown variable {variable_id!r}") from None
        if key == PAIRS_KEY and attribute is not None and attribute not in variable.locations:
            raise ValueError(f"{key}: {attribute!r} is not a location of {variable_id}")
        if key == EPISODES_KEY:
            if variable.qualifier is None:
                raise ValueError(f"{key}: {variable_id} has no qualifier (episode)")
            options = [o.id for o in variable.qualifier.options]
            if attribute is not None and attribute not in options:
                raise ValueError(f"{key}: {attribute!r} is not a qualifier option of {variable_id}")
        pairs.append((variable_id, attribute))
    return pairs


def parse_record(
    record: object,
    source: str,
    line: int,
    templates: Callable[[str], Template],
    forced_template: str | None = None,
) -> LabelledReport:
    """One dataset record (a parsed JSONL line) -> LabelledReport; DatasetError names file:line."""

    def bad(message: str) -> DatasetError:
        return DatasetError(source, line, message)

    if not isinstance(record, dict):
        raise bad("a line must be a JSON object")
    for key in ("id", "text", "gold"):
        if key not in record:
            raise bad(f"missing key {key!r}")
    template_id = record.get("template", forced_template)
    if not isinstance(template_id, str):
        raise bad("missing key 'template' (or give --template)")
    if not isinstance(record["id"], str | int) or isinstance(record["id"], bool):
        raise bad("'id' must be a string")
    if not isinstance(record["text"], str) or not record["text"].strip():
        raise bad("'text' must be a non-empty string")
    language = record.get("language")
    if language is not None and not isinstance(language, str):
        raise bad("'language' must be a string")
    gold_raw = record["gold"]
    if not isinstance(gold_raw, dict):
        raise bad("'gold' must be an object")
    try:
        template = templates(template_id)
    except TemplateError as exc:
        raise bad(f"template {template_id!r}: {exc}") from None
    known = {v.id for v in template.variables} | {PAIRS_KEY, EPISODES_KEY}
    unknown = sorted(set(gold_raw) - known)
    if unknown:
        raise bad(f"gold has unknown variable(s) for {template_id}: {', '.join(unknown)}")
    gold: dict[str, Label] = {}
    try:
        for variable in template.variables:
            if variable.id not in gold_raw:
                raise ValueError(f"gold lacks variable {variable.id!r} (use 'not_mentioned')")
            gold[variable.id] = gold_label(variable, gold_raw[variable.id])
        pairs = (
            normalise_pairs(template, _pair_list(template, gold_raw[PAIRS_KEY], PAIRS_KEY))
            if PAIRS_KEY in gold_raw
            else None
        )
        episodes = (
            frozenset(_pair_list(template, gold_raw[EPISODES_KEY], EPISODES_KEY))
            if EPISODES_KEY in gold_raw
            else None
        )
    except ValueError as exc:
        raise bad(str(exc)) from None
    time_value = record.get("time")
    if time_value is not None:
        try:
            date.fromisoformat(str(time_value)[:10])
        except ValueError:
            raise bad("'time' must be an ISO date") from None
    patient = record.get("patient")
    return LabelledReport(
        id=str(record["id"]),
        source=f"{source}:{line}",
        text=record["text"],
        language=language,
        template=template_id,
        gold=gold,
        pairs=pairs,
        episodes=episodes,
        patient=None if patient is None else str(patient),
        time=None if time_value is None else str(time_value),
    )


def _builtin_template(template_id: str) -> Template:
    from mappings.template import get_template

    return get_template(template_id)


def read_records(
    records: Iterable[tuple[int, object]],
    source: str,
    *,
    template_id: str | None = None,
    templates: Callable[[str], Template] = _builtin_template,
) -> tuple[LabelledReport, ...]:
    """Parse (line number, record) pairs; with `template_id` only that template's records."""
    reports: list[LabelledReport] = []
    seen: set[tuple[str, str]] = set()
    for line, record in records:
        if template_id is not None and isinstance(record, dict):
            own = record.get("template", template_id)
            if own != template_id:
                continue
        report = parse_record(record, source, line, templates, template_id)
        key = (report.template, report.id)
        if key in seen:
            raise DatasetError(source, line, f"duplicate id {report.id!r}")
        seen.add(key)
        reports.append(report)
    return tuple(reports)


def _jsonl_records(path: Path) -> Iterator[tuple[int, object]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(str(path), None, f"cannot read: {exc}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(str(path), number, f"invalid JSON: {exc.msg}") from None


def load_jsonl(path: Path, template_id: str | None = None) -> Dataset:
    """A JSONL dataset in the Contracts form."""
    reports = read_records(_jsonl_records(path), str(path), template_id=template_id)
    return Dataset(path, "jsonl", reports)


NEGEX_FILES = ("rsAnnotations-1-120-random.txt", "Annotations-1-120.txt")


def is_negex(path: Path) -> bool:
    """The NegEx annotation file, or a folder holding one."""
    if path.is_dir():
        return any((path / name).is_file() for name in NEGEX_FILES)
    return path.name in NEGEX_FILES


def is_dragon(path: Path) -> bool:
    """The DRAGON sample folder (Task*.md files under english/ or dutch/)."""
    if not path.is_dir():
        return False
    return any(
        next((path / lang).glob("Task*.md"), None) is not None
        for lang in ("english", "dutch")
        if (path / lang).is_dir()
    )


DRAGON_NEEDS = (
    "DRAGON conversion needs the llm_extractinator task import (mappings/extractinator.py)"
)


def _template_lookup(templates: Mapping[str, Template]) -> Callable[[str], Template]:
    def lookup(template_id: str) -> Template:
        if template_id not in templates:
            raise TemplateError(template_id, "id", "not a template of this dataset")
        return templates[template_id]

    return lookup


def load_dragon(path: Path, template_id: str | None = None) -> Dataset:
    """The DRAGON samples converted by `conformance.dragon` (each task its imported template).

    Named-entity tasks are unsupported: they give no records and one line each in `notes`.
    """
    try:
        dragon = importlib.import_module("conformance.dragon")
    except ModuleNotFoundError as exc:
        if exc.name not in ("conformance.dragon", "mappings.extractinator"):
            raise
        raise ConverterUnavailable(DRAGON_NEEDS) from None
    converted = dragon.load_dragon_set(path)
    records = enumerate(converted.records, start=1)
    reports = read_records(
        records,
        str(path),
        template_id=template_id,
        templates=_template_lookup(converted.templates),
    )
    notes = tuple(f"{task}: unsupported: {why}" for task, why in converted.unsupported.items())
    return Dataset(path, "dragon", reports, converted.templates, notes)


def detect_format(path: Path) -> str:
    """The name of the first format in `DATASET_FORMATS` whose detector accepts `path`."""
    return _format_of(path).name


def _format_of(path: Path) -> DatasetFormat:
    if not path.exists():
        raise EvaluationError(f"{path}: no such file or folder")
    for fmt in DATASET_FORMATS:
        if fmt.detect(path):
            return fmt
    raise EvaluationError(f"{path}: not a recognised dataset (JSONL file, NegEx, DRAGON folder)")


# ---------------------------------------------------------------------------------------------
# Running and scoring


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


@dataclass
class _Run:
    labels: list[Mapping[str, Label]] = field(default_factory=list)
    pairs: list[frozenset[Pair]] = field(default_factory=list)
    episodes: list[frozenset[Pair]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    tokens: int = 0
    decode_seconds: float = 0.0
    model: str | None = None
    failed: list[str] = field(default_factory=list)


def _timing(run: _Run) -> Timing:
    total = sum(run.seconds)
    return Timing(
        reports=len(run.seconds),
        seconds_total=round(total, 6),
        seconds_per_report_mean=round(total / len(run.seconds), 6) if run.seconds else None,
        seconds_per_report_median=round(statistics.median(run.seconds), 6) if run.seconds else None,
        completion_tokens=run.tokens,
        decode_seconds=round(run.decode_seconds, 6),
        tokens_per_second=round(run.tokens / run.decode_seconds, 3)
        if run.decode_seconds > 0 and run.tokens
        else None,
    )


def _errors(
    specs: Sequence[VariableSpec],
    reports: Sequence[LabelledReport],
    labels: Sequence[Mapping[str, Label]],
) -> tuple[tuple[CellError, ...], int]:
    errors = [
        CellError(report.id, spec.id, report.gold[spec.id], row[spec.id])
        for report, row in zip(reports, labels, strict=True)
        for spec in specs
        if not labels_equal(report.gold[spec.id], row[spec.id], spec.kind, spec.tolerance)
    ]
    return tuple(errors[:MAX_ERRORS_LISTED]), len(errors)


def _score(
    specs: Sequence[VariableSpec],
    reports: Sequence[LabelledReport],
    stage: str,
    run: _Run,
    resamples: int,
    seed: int,
) -> StageResult:
    with_pairs = all(r.pairs is not None for r in reports) and bool(reports)
    with_episodes = all(r.episodes is not None for r in reports) and bool(reports)
    metrics = evaluate_labels(
        specs,
        [r.gold for r in reports],
        run.labels,
        gold_pairs=[r.pairs or frozenset() for r in reports] if with_pairs else None,
        pred_pairs=run.pairs if with_pairs else None,
        gold_episodes=[r.episodes or frozenset() for r in reports] if with_episodes else None,
        pred_episodes=run.episodes if with_episodes else None,
        resamples=resamples,
        seed=seed,
    )
    errors, total = _errors(specs, reports, run.labels)
    return StageResult(stage, metrics, _timing(run), errors, total, run.model, tuple(run.failed))


def compare_stages(
    specs: Sequence[VariableSpec],
    gold: Sequence[Mapping[str, Label]],
    runs: Mapping[str, Sequence[Mapping[str, Label]]],
) -> tuple[StageComparison, ...]:
    """Agreement (over report × variable cells) and McNemar tests for every pair of stages."""
    comparisons = []
    for a, b in combinations(list(runs), 2):
        la, lb = runs[a], runs[b]
        kinds_equal = [
            labels_equal(x[s.id], y[s.id], s.kind, s.tolerance)
            for x, y in zip(la, lb, strict=True)
            for s in specs
        ]
        agree = (sum(kinds_equal) / len(kinds_equal)) if kinds_equal else None
        exact = mcnemar(
            [report_correct(specs, g, p) for g, p in zip(gold, la, strict=True)],
            [report_correct(specs, g, p) for g, p in zip(gold, lb, strict=True)],
        )
        per_variable = {
            s.id: mcnemar(
                [
                    labels_equal(g[s.id], p[s.id], s.kind, s.tolerance)
                    for g, p in zip(gold, la, strict=True)
                ],
                [
                    labels_equal(g[s.id], p[s.id], s.kind, s.tolerance)
                    for g, p in zip(gold, lb, strict=True)
                ],
            )
            for s in specs
        }
        comparisons.append(StageComparison(a, b, agree, exact, per_variable))
    return tuple(comparisons)


def _report(item: LabelledReport, default_language: str) -> Report:
    from mappings.language import detect_language
    from mappings.sections import find_sections

    text = item.text.replace("\r\n", "\n").replace("\r", "\n")
    observed = None
    if item.time is not None:
        day = date.fromisoformat(item.time[:10])
        observed = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return Report(
        source_format="fhir",
        report_id=item.id,
        fhir_resource_id=item.id,
        language=item.language or detect_language(text, default_language),
        observation_time=observed,
        text=text,
        sections=find_sections(text),
    )


def evaluate_template(
    template: Template,
    reports: Sequence[LabelledReport],
    stages: Sequence[StageName],
    settings: Settings,
    *,
    tolerance: float = 0.0,
    resamples: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> TaskResult:
    """Run every stage on every report of one template and score it."""
    from workers.engine import get_engine
    from workers.errors import ExtractionError
    from workers.stages import run_stage

    specs = variable_specs(template, tolerance)
    runs: dict[str, _Run] = {}
    for stage in stages:
        stage_settings = settings.model_copy(update={"stage": stage})
        run = _Run()
        for item in reports:
            report = _report(item, settings.default_language)
            started = time.perf_counter()
            try:
                extraction = run_stage(
                    report, template, stage_settings, functools.partial(get_engine, stage_settings)
                )
            except ExtractionError:
                # no valid output: nothing was extracted (scored as not_mentioned), and counted
                run.seconds.append(time.perf_counter() - started)
                run.failed.append(item.id)
                run.labels.append({spec.id: NOT_MENTIONED for spec in specs})
                run.pairs.append(frozenset())
                run.episodes.append(frozenset())
                if progress is not None:
                    progress()
                continue
            run.seconds.append(time.perf_counter() - started)
            run.tokens += extraction.timings.completion_tokens
            run.decode_seconds += extraction.timings.seconds
            run.model = f"{extraction.model.name} (sha256 {extraction.model.sha256[:12]})"
            labels = predicted_labels(extraction, template)
            run.pairs.append(labels.pop(PAIRS_KEY))
            run.episodes.append(labels.pop(EPISODES_KEY))
            run.labels.append(labels)
            if progress is not None:
                progress()
        runs[stage] = run
    return TaskResult(
        task=template.id,
        title=template.title,
        kind="template",
        variables=specs,
        stages={
            stage: _score(specs, reports, stage, run, resamples, seed)
            for stage, run in runs.items()
        },
        comparisons=compare_stages(
            specs, [r.gold for r in reports], {s: r.labels for s, r in runs.items()}
        ),
    )


def group_by_template(reports: Iterable[LabelledReport]) -> dict[str, list[LabelledReport]]:
    """Reports per template id, in first-seen order."""
    groups: dict[str, list[LabelledReport]] = {}
    for report in reports:
        groups.setdefault(report.template, []).append(report)
    return groups


def evaluate_dataset(
    dataset: Dataset,
    stages: Sequence[StageName],
    settings: Settings,
    *,
    templates: Callable[[str], Template] = _builtin_template,
    tolerance: float = 0.0,
    resamples: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Evaluate every template of a loaded (JSONL or converted) dataset."""
    if not dataset.reports:
        raise EvaluationError(f"{dataset.path}: no labelled reports to evaluate")
    if dataset.templates is not None:
        templates = _template_lookup(dataset.templates)
    tasks = tuple(
        evaluate_template(
            templates(template_id),
            group,
            stages,
            settings,
            tolerance=tolerance,
            resamples=resamples,
            seed=seed,
            progress=progress,
        )
        for template_id, group in group_by_template(dataset.reports).items()
    )
    return EvaluationResult(
        dataset=str(dataset.path),
        format=dataset.format,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        model=next(
            (
                result.model
                for task in tasks
                for name, result in task.stages.items()
                if name != "rules" and result.model
            ),
            None,
        ),
        resamples=resamples,
        seed=seed,
        tasks=tasks,
        notes=dataset.notes,
    )


def _yes(flag: bool) -> Label:
    return YES if flag else NO


def evaluate_negex(
    path: Path,
    *,
    resamples: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Stage-1 assertion detection (`workers.context.assess`) on the NegEx / ConText annotations.

    One case per annotated sentence–concept pair (`conformance.negex.load_negex`); binary
    variables `negated`, and with the ConText file also `historical`, `hypothetical`,
    `other_experiencer` (positive = the assertion holds).
    """
    from conformance.negex import load_negex
    from workers.context import assess

    items = load_negex(path)
    if not items:
        raise EvaluationError(f"{path}: no NegEx annotations")
    with_context = all(item.temporality is not None for item in items)
    names = ("negated", "historical", "hypothetical", "other_experiencer")
    specs = tuple(VariableSpec(name, "binary") for name in names[: 4 if with_context else 1])
    cases: list[LabelledReport] = []
    run = _Run()
    for item in items:
        gold = {
            "negated": _yes(item.gold == "negated"),
            "historical": _yes(item.temporality == "historical"),
            "hypothetical": _yes(item.temporality == "hypothetical"),
            "other_experiencer": _yes(item.experiencer == "other"),
        }
        started = time.perf_counter()
        result = assess(item.sentence, item.start, item.end, "en")
        run.seconds.append(time.perf_counter() - started)
        predicted = {
            "negated": _yes(result.negated),
            "historical": _yes(result.historical),
            "hypothetical": _yes(result.hypothetical),
            "other_experiencer": _yes(result.other_experiencer),
        }
        keep = {spec.id for spec in specs}
        cases.append(
            LabelledReport(
                id=item.id,
                source=item.id,
                text="",
                language="en",
                template="negex",
                gold={k: v for k, v in gold.items() if k in keep},
            )
        )
        run.labels.append({k: v for k, v in predicted.items() if k in keep})
        if progress is not None:
            progress()
    task = TaskResult(
        task="negex",
        title="NegEx / ConText assertion detection (stage 1)",
        kind="assertion",
        variables=specs,
        stages={"rules": _score(specs, cases, "rules", run, resamples, seed)},
        comparisons=(),
    )
    return EvaluationResult(
        dataset=str(path),
        format="negex",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        model=None,
        resamples=resamples,
        seed=seed,
        tasks=(task,),
    )


@dataclass(frozen=True)
class EvalOptions:
    """What `radbridge eval` was asked for (`stage` None: the settings' stage)."""

    settings: Settings
    stage: str | None = None
    template: str | None = None
    tolerance: float = 0.0
    resamples: int = 1000
    seed: int = 0
    progress: Callable[[int], Progress] | None = None
    """Called once with the number of steps; returns the function that advances one step."""


def _stages(options: EvalOptions) -> tuple[StageName, ...]:
    if options.stage == "all":
        return ALL_STAGES
    stage = options.stage or options.settings.stage
    for known in ALL_STAGES:
        if stage == known:
            return (known,)
    raise EvaluationError(f"unknown stage {stage!r} (rules, llm, hybrid or all)")


def _evaluate_loaded(dataset: Dataset, options: EvalOptions) -> EvaluationResult:
    if not dataset.reports:
        suffix = f" for template {options.template}" if options.template else ""
        raise EvaluationError(f"{dataset.path}: no labelled reports{suffix}")
    stages = _stages(options)
    advance = options.progress(len(dataset.reports) * len(stages)) if options.progress else None
    return evaluate_dataset(
        dataset,
        stages,
        options.settings,
        tolerance=options.tolerance,
        resamples=options.resamples,
        seed=options.seed,
        progress=advance,
    )


def _evaluate_negex_path(path: Path, options: EvalOptions) -> EvaluationResult:
    if options.stage not in (None, "rules"):
        raise EvaluationError("NegEx evaluates stage-1 assertion detection: use --stage rules")
    return evaluate_negex(path, resamples=options.resamples, seed=options.seed)


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset format: how to recognise it and how to evaluate it."""

    name: str
    detect: Callable[[Path], bool]
    evaluate: Callable[[Path, EvalOptions], EvaluationResult]


DATASET_FORMATS: tuple[DatasetFormat, ...] = (
    DatasetFormat("negex", is_negex, _evaluate_negex_path),
    DatasetFormat(
        "dragon", is_dragon, lambda p, o: _evaluate_loaded(load_dragon(p, o.template), o)
    ),
    DatasetFormat(
        "jsonl", Path.is_file, lambda p, o: _evaluate_loaded(load_jsonl(p, o.template), o)
    ),
)
"""Dataset formats, first match wins: a new format is a detector plus an evaluator."""


def run_evaluation(path: Path, options: EvalOptions) -> EvaluationResult:
    """Detect the dataset's format and evaluate it."""
    return _format_of(path).evaluate(path, options)


# ---------------------------------------------------------------------------------------------
# Output


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return value


def result_json(result: EvaluationResult) -> dict[str, Any]:
    """metrics.json content (plain JSON types; undefined metrics are null)."""
    data: dict[str, Any] = _jsonable(asdict(result))
    for task, raw in zip(result.tasks, data["tasks"], strict=True):
        for name, stage in task.stages.items():
            micro = stage.metrics.micro
            raw["stages"][name]["metrics"]["micro_scores"] = _jsonable(
                {
                    "precision": micro.precision,
                    "recall": micro.recall,
                    "f1": micro.f1,
                    "specificity": micro.specificity,
                    "accuracy": micro.accuracy,
                }
            )
    return data


def write_metrics_json(result: EvaluationResult, path: Path) -> None:
    """Write metrics.json (atomically)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(result_json(result), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        "utf-8",
    )
    tmp.replace(path)


def fmt(value: float | None, digits: int = 3) -> str:
    """A metric for display ("n/a" when undefined)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_ci(stage: StageResult, key: str) -> str:
    """`value [low, high]` of a top-level metric."""
    interval = stage.metrics.ci.get(key)
    if key.startswith("macro_"):
        value = stage.metrics.macro.get(key.removeprefix("macro_"))
    else:
        value = getattr(stage.metrics, key)
    text = fmt(value)
    if interval is not None:
        text += f" [{interval.low:.3f}, {interval.high:.3f}]"
    return text


def _summary_rows(stage: StageResult) -> list[tuple[str, str]]:
    m, t = stage.metrics, stage.timing
    rows = [
        ("cases", str(m.reports)),
        ("micro precision", fmt(m.micro.precision)),
        ("micro recall", fmt(m.micro.recall)),
        ("micro F1", fmt(m.micro.f1)),
        ("macro precision", fmt_ci(stage, "macro_precision")),
        ("macro recall", fmt_ci(stage, "macro_recall")),
        ("macro F1", fmt_ci(stage, "macro_f1")),
        ("macro specificity", fmt_ci(stage, "macro_specificity")),
        ("macro accuracy", fmt_ci(stage, "macro_accuracy")),
        ("macro class accuracy", fmt_ci(stage, "macro_class_accuracy")),
        ("report exact accuracy", fmt_ci(stage, "exact_accuracy")),
        (
            f"specificity on the {m.negative_reports} all-negative cases",
            fmt(m.negative_report_specificity),
        ),
    ]
    for label, pairs in (("lesion–location", m.pairs), ("diagnosis–episode", m.episodes)):
        if pairs is not None:
            rows.append((f"{label} pair F1", fmt(pairs.f1)))
            rows.append((f"{label} per-item accuracy", fmt(pairs.item_accuracy)))
    if stage.failed:
        rows.append(("extractions without valid output", str(len(stage.failed))))
    rows.append(("seconds / case (mean)", fmt(t.seconds_per_report_mean, 4)))
    rows.append(("tokens / s (output)", fmt(t.tokens_per_second, 1)))
    return rows


def summary_tables(result: EvaluationResult) -> list[Table]:
    """Rich tables per task: measures × stages (95% CI in brackets), F1 per variable, McNemar."""
    tables: list[Table] = []
    for task in result.tasks:
        table = Table(title=f"radbridge eval: {task.task} ({result.format})")
        table.add_column("measure")
        for name in task.stages:
            table.add_column(name, justify="right")
        columns = [_summary_rows(stage) for stage in task.stages.values()]
        for index, (label, _) in enumerate(columns[0] if columns else []):
            table.add_row(label, *(column[index][1] for column in columns))
        tables.append(table)
        per_variable = Table(title=f"{task.task}: F1 per variable (class accuracy)")
        per_variable.add_column("variable")
        per_variable.add_column("kind")
        for name in task.stages:
            per_variable.add_column(name, justify="right")
        for spec in task.variables:
            cells = []
            for stage in task.stages.values():
                vm = stage.metrics.variables[spec.id]
                cells.append(f"{fmt(vm.f1)} ({fmt(vm.class_accuracy)})")
            per_variable.add_row(spec.id, spec.kind, *cells)
        tables.append(per_variable)
        if task.comparisons:
            tests = Table(title=f"{task.task}: stage comparison (McNemar, report exactness)")
            for column in ("stages", "agreement", "only A right", "only B right", "p"):
                tests.add_column(column, justify="right")
            for comp in task.comparisons:
                tests.add_row(
                    f"{comp.a} vs {comp.b}",
                    fmt(comp.agreement),
                    str(comp.exact.only_a),
                    str(comp.exact.only_b),
                    fmt(comp.exact.p_value, 4),
                )
            tables.append(tests)
    return tables
