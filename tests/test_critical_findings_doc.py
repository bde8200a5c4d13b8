"""docs/critical-findings.md lists what mappings/insights/critical.yaml holds: ids, terms, category."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "critical-findings.md"
SHIPPED = ROOT / "mappings" / "insights" / "critical.yaml"
ROW = re.compile(r"^\| `(?P<id>[a-z_]+)` \| (?P<cells>.*) \|$", re.M)


def _doc_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for match in ROW.finditer(DOC.read_text("utf-8")):
        # a cell ends at a " | " that is not an escaped "\|" inside a regular expression
        rows[match["id"]] = re.split(r"(?<!\\) \| ", match["cells"])
    return rows


def test_the_doc_lists_every_shipped_finding_in_order() -> None:
    shipped = yaml.safe_load(SHIPPED.read_text("utf-8"))["findings"]
    assert list(_doc_rows()) == [finding["id"] for finding in shipped]


def test_the_terms_column_is_what_the_yaml_matches() -> None:
    rows = _doc_rows()
    for finding in yaml.safe_load(SHIPPED.read_text("utf-8"))["findings"]:
        _label, terms, category, _checked = rows[finding["id"]]
        written = [term.replace("\\|", "|") for term in re.findall(r"`((?:[^`])+)`", terms)]
        assert written == [str(term) for term in finding["terms"]], finding["id"]
        assert category.startswith(str(finding["category"])), finding["id"]
