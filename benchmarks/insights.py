"""Insights benchmark (issue 20): the rules-stage cost of the insights step as a ratio to the
rules stage without it, on the labelled insights set (tests/fixtures/labelled/insights.jsonl).

Per round, back to back in one process (warm caches for both): the rules stage
(`workers.rules_stage.extract_rules`) of every routed (report, template) pair, then the insights
step (`workers.insights.extract.insights_of`) of the same routed reports; the ratio is
(rules + insights) / rules, the median over rounds. The insights step of the reports no template
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
    pairs = [(r, t) for r in reports for t in decide(r, templates).chosen]
    routed = [r for r in reports if decide(r, templates).chosen]
    unrouted = [r for r in reports if not decide(r, templates).chosen]
    rules, insights, other, ratios = [], [], [], []
    for _ in range(args.rounds + 1):  # the first round warms the caches and is dropped
        a = _seconds(lambda: [extract_rules(r, t) for r, t in pairs])
        b = _seconds(lambda: [insights_of(r, settings) for r in routed])
        c = _seconds(lambda: [insights_of(r, settings) for r in unrouted])
        rules.append(a)
        insights.append(b)
        other.append(c)
        ratios.append((a + b) / a)
    rules, insights, other, ratios = rules[1:], insights[1:], other[1:], ratios[1:]
    print(f"reports: {len(reports)} ({len(routed)} routed, {len(pairs)} report x template)")
    print(f"rules stage, routed pairs: {statistics.median(rules) * 1000:.1f} ms")
    print(f"insights step, routed reports: {statistics.median(insights) * 1000:.1f} ms")
    print(f"ratio (rules + insights) / rules: {statistics.median(ratios):.2f} (goal <= 1.3)")
    per_report = statistics.median(other) * 1000 / max(1, len(unrouted))
    print(f"insights step, reports no template applies to: {per_report:.2f} ms / report")


if __name__ == "__main__":
    main()
