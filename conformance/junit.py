"""JUnit XML for CI systems (the common Jenkins/GitLab/GitHub subset), written with xml.etree.

One `<testsuite>` inside `<testsuites>`; each case is passed, failed (`<failure>`: the check
ran and the result differs, e.g. a golden diff), errored (`<error>`: the check could not run,
e.g. no answer, timeout) or skipped. Suite attributes count them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

CaseOutcome = Literal["passed", "failed", "error", "skipped"]
# characters XML 1.0 cannot carry (ElementTree would write them and break the file)
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


@dataclass(frozen=True)
class CaseResult:
    """One test case: its outcome, a one-line message and the full detail (a diff)."""

    name: str
    classname: str
    outcome: CaseOutcome
    seconds: float = 0.0
    message: str = ""
    detail: str = ""


def junit_tree(suite: str, cases: Sequence[CaseResult]) -> ET.ElementTree[ET.Element]:
    """The JUnit XML document for one suite of cases."""
    counts = {
        outcome: sum(1 for c in cases if c.outcome == outcome) for outcome in get_args(CaseOutcome)
    }
    total_seconds = sum(c.seconds for c in cases)
    totals = {
        "name": suite,
        "tests": str(len(cases)),
        "failures": str(counts["failed"]),
        "errors": str(counts["error"]),
        "skipped": str(counts["skipped"]),
        "time": f"{total_seconds:.3f}",
    }
    root = ET.Element("testsuites", totals)
    element = ET.SubElement(root, "testsuite", totals)
    for case in cases:
        node = ET.SubElement(
            element,
            "testcase",
            name=_xml_safe(case.name),
            classname=_xml_safe(case.classname),
            time=f"{case.seconds:.3f}",
        )
        if case.outcome == "passed":
            continue
        tag = {"failed": "failure", "error": "error", "skipped": "skipped"}[case.outcome]
        child = ET.SubElement(node, tag, message=_xml_safe(case.message))
        if case.detail:
            child.text = _xml_safe(case.detail)
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: Path, suite: str, cases: Sequence[CaseResult]) -> None:
    """Write the JUnit XML file (UTF-8, with an XML declaration)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(suite, cases).write(path, encoding="utf-8", xml_declaration=True)
