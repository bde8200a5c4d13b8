"""Insights benchmark (issue 20): the rules-stage cost of the insights step as a ratio to the
rules stage without it, on the labelled insights set (tests/fixtures/labelled/insights.jsonl).

Per round, in one process and in the order the pipeline runs them (`workers.process`): for each
routed report, the rules stage (`workers.rules_stage.extract_rules`) of each of its templates,
then the insights step (`workers.insights.extract.insights_of`) of the same report, each timed
on its own; the ratio is (rules + insights) / rules summed over the reports, the median over
rounds. Report by report, as in the service, the insights step finds the text's units
(`mappings.units`, cached per text) that the rules stage has just found; timing all rules first
and all insights after would find them again once the set outgrows that cache (it did at 454
reports) and charge it to the insights step. The insights step of the reports no template
applies to (which the rules stage never sees) is reported apart, per report.

    .venv/bin/python benchmarks/insights.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapter.settings import Settings
from mappings.inbound import report_from_record
from mappings.report import Report
from mappings.routing import decide
from mappings.template import load_builtin_templates
from workers.insights.extract import insights_of
from workers.rules_stage import extract_rules

SET = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "labelled" / "insights.jsonl"


def _reports() -> list[Report]:
    reports = []
    for line in SET.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        record = {
            "id": row["id"],
            "text": row["text"],
            "language": row["language"],
            "date": f"{row['context']['report_date']}T12:00:00",
        }
        reports.append(report_from_record(record, default_language="en"))
    return reports


def _seconds(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    """Print the rules-stage time, the insights time and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    settings = Settings(stage="rules")
    templates = list(load_builtin_templates().values())
    reports = _reports()
    routed = [(r, decide(r, templates).chosen) for r in reports if decide(r, templates).chosen]
    unrouted = [r for r in reports if not decide(r, templates).chosen]
    pairs = sum(len(chosen) for _, chosen in routed)
    rules, insights, other, ratios = [], [], [], []
    for _ in range(args.rounds + 1):  # the first round warms the caches and is dropped
        a = b = 0.0
        for report, chosen in routed:
            a += _seconds(lambda: [extract_rules(report, t) for t in chosen])  # noqa: B023
            b += _seconds(lambda: insights_of(report, settings))  # noqa: B023
        c = _seconds(lambda: [insights_of(r, settings) for r in unrouted])
        rules.append(a)
        insights.append(b)
        other.append(c)
        ratios.append((a + b) / a)
    rules, insights, other, ratios = rules[1:], insights[1:], other[1:], ratios[1:]
    print(f"reports: {len(reports)} ({len(routed)} routed, {pairs} report x template)")
    print(f"rules stage, routed pairs: {statistics.median(rules) * 1000:.1f} ms")
    print(f"insights step, routed reports: {statistics.median(insights) * 1000:.1f} ms")
    print(f"ratio (rules + insights) / rules: {statistics.median(ratios):.2f} (goal <= 1.3)")
    per_report = statistics.median(other) * 1000 / max(1, len(unrouted))
    print(f"insights step, reports no template applies to: {per_report:.2f} ms / report")


if __name__ == "__main__":
    main()
