"""The labelled sets of issue 21's five new templates and its routing cases: their shape.

The sets (tests/fixtures/labelled/{head_ct,abdomen,msk_radiograph,breast,thyroid_us}.jsonl) and
routing.jsonl were written BEFORE the templates and their rules; new_templates_spec.json lists
what the gold may say (variables, kinds, values, body sites, finding attributes) and
new_templates_spec.md explains it. These tests check that every record keeps to the spec, that
the minimums of the task hold in each dev/test half, and that the cited codes are where the spec
says they are. They need no template: they judge the data, not the rules.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mappings import terminology
from tests.labelled import LABELLED, read_rows

SPEC_JSON = LABELLED / "new_templates_spec.json"
SPEC_MD = LABELLED / "new_templates_spec.md"
SHARED_TERMINOLOGY = Path(__file__).resolve().parents[1].parent / "shared" / "terminology"

RECORD_KEYS = {"id", "text", "language", "template", "split", "modality", "exam", "gold"}
ROUTING_KEYS = {"id", "text", "language", "modality", "exam", "expected_templates", "note"}
ROUTING_OPTIONAL = {"body_part", "procedure_code"}
PRESENCE = ("present", "absent", "uncertain", "not_mentioned")
NOT_MENTIONED = "not_mentioned"
SPLITS = ("dev", "test")
PAIRS, ATTRIBUTES = "_pairs", "_attributes"
# The ACR BI-RADS order from least to most abnormal: the overall category of two sides.
BIRADS_ORDER = ("birads_1", "birads_2", "birads_3", "birads_6", "birads_0", "birads_4",
                "birads_4a", "birads_4b", "birads_4c", "birads_5")  # fmt: skip


def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SPEC_JSON.read_text("utf-8"))
    return spec


SPEC = _spec()
TEMPLATES: dict[str, Any] = SPEC["templates"]
MINIMUMS: dict[str, int] = SPEC["minimums"]


def _variables(template_id: str) -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in TEMPLATES[template_id]["variables"]}


def _tirads_level(points: int) -> int:
    """ACR TI-RADS: 0-1 points TR1, 2 TR2, 3 TR3, 4-6 TR4, 7 or more TR5."""
    return 1 if points <= 1 else 2 if points == 2 else 3 if points == 3 else 4 if points <= 6 else 5


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.fixture(params=sorted(TEMPLATES))
def template_id(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


# --- the spec ----------------------------------------------------------------------------------


def test_spec_names_the_five_templates_and_every_variable_has_a_kind() -> None:
    assert sorted(TEMPLATES) == ["abdomen", "breast", "head_ct", "msk_radiograph", "thyroid_us"]
    assert not set(TEMPLATES) & set(SPEC["existing_templates"])
    for template_id, template in TEMPLATES.items():
        ids = [v["id"] for v in template["variables"]]
        assert len(ids) == len(set(ids)), template_id
        assert template["modalities"] and template["exam_examples"].keys() == {"en", "nl", "de"}
        for variable in template["variables"]:
            assert variable["kind"] in ("presence", "ordinal", "number", "enum"), variable["id"]
            assert len(variable["definition"]) >= 10, variable["id"]
            assert ("code" in variable) != ("uncoded_reason" in variable), variable["id"]
            for attribute in variable["attributes"]:
                assert attribute in template["attributes"], (variable["id"], attribute)
            for location in variable.get("locations", []):
                assert location in template["locations"], (variable["id"], location)
            if "site" in variable["attributes"]:
                assert variable.get("locations"), variable["id"]
        covered = {v for statement in template["normal_statements"]
                   if isinstance(statement["covers"], list) for v in statement["covers"]}  # fmt: skip
        assert covered <= set(ids), template_id


def _codes(node: object) -> Iterator[dict[str, str]]:
    if isinstance(node, dict):
        if "system" in node and "code" in node:
            yield node
        for value in node.values():
            yield from _codes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _codes(value)


def test_every_candidate_code_cites_a_line_and_none_is_a_known_wrong_code() -> None:
    codes = list(_codes(TEMPLATES))
    assert len(codes) > 50
    for code in codes:
        assert code["system"] in (terminology.SNOMED, terminology.LOINC), code
        assert code["display"] and re.fullmatch(
            r"\.\./shared/terminology/[\w.-]+ line \d+", code["source"]
        ), code
        assert (code["system"], code["code"]) not in terminology.DO_NOT_USE, code


def test_the_cited_lines_hold_the_codes() -> None:
    """Each candidate code is on the cited line of ../shared/terminology with that display."""
    if not SHARED_TERMINOLOGY.is_dir():
        pytest.skip(f"../shared/terminology not found at {SHARED_TERMINOLOGY}")
    files: dict[str, list[str]] = {}
    for code in _codes(TEMPLATES):
        cited = re.fullmatch(r"\.\./shared/terminology/(\S+) line (\d+)", code["source"])
        assert cited, code
        name, line = cited.groups()
        lines = files.setdefault(name, (SHARED_TERMINOLOGY / name).read_text("utf-8").splitlines())
        text = lines[int(line) - 1]
        if name.endswith(".tsv"):
            assert text.split("\t")[:2] == [code["code"], code["display"]], code
        else:  # the FHIR ValueSet JSON: "code" on this line, "display" on the next
            assert f'"{code["code"]}"' in text and f'"{code["display"]}"' in lines[int(line)], code


def test_the_markdown_spec_names_every_template_variable_value_and_attribute() -> None:
    text = SPEC_MD.read_text("utf-8")
    for template_id, template in TEMPLATES.items():
        assert f"`{template_id}`" in text, template_id
        for variable in template["variables"]:
            assert f"`{variable['id']}`" in text, variable["id"]
            for value in variable.get("values", []):
                assert f"`{value['id']}`" in text, value["id"]
        for attribute in template["attributes"]:
            assert f"`{attribute}`" in text, attribute
        for location in template["locations"]:
            assert f"`{location}`" in text, location
    assert "`_attributes`" in (LABELLED / "README.md").read_text("utf-8")


# --- the labelled sets -------------------------------------------------------------------------


def test_records_have_the_schema_and_unique_ids(template_id: str) -> None:
    template = TEMPLATES[template_id]
    rows = read_rows(template_id)
    for row in rows:
        assert set(row) == RECORD_KEYS, row.get("id")
        assert isinstance(row["id"], str) and row["template"] == template_id, row["id"]
        assert isinstance(row["text"], str) and row["text"].strip(), row["id"]
        assert row["language"] in SPEC["languages"], row["id"]
        assert row["split"] in SPLITS, row["id"]
        assert row["modality"] in template["modalities"], row["id"]
        assert row["exam"] is None or (isinstance(row["exam"], str) and row["exam"].strip())
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids))
    assert any(row["exam"] is None for row in rows), "some records come without an exam line"
    assert sum(row["exam"] is not None for row in rows) >= len(rows) // 2


def test_ids_are_unique_across_every_labelled_set() -> None:
    sets = [path.stem for path in LABELLED.glob("*.jsonl") if path.stem != "routing"]
    ids = Counter(row["id"] for name in sets for row in read_rows(name))
    assert [i for i, n in ids.items() if n > 1] == []


def _check_attribute(
    template: dict[str, Any], variable: dict[str, Any], key: str, value: object
) -> None:
    spec = template["attributes"][key]
    kind = spec["type"]
    where = (variable["id"], key, value)
    if kind == "enum":
        assert value in spec["values"], where
    elif kind == "locations":
        assert isinstance(value, list) and value, where
        assert all(site in variable["locations"] for site in value), where
    elif kind == "number_list":
        assert isinstance(value, list) and 1 <= len(value) <= 3, where
        assert all(_number(x) and spec["min"] <= x <= spec["max"] for x in value), where
    elif kind == "number":
        assert _number(value), where
        assert isinstance(value, int | float) and spec["min"] <= value <= spec["max"], where
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), where
        assert spec["min"] <= value <= spec["max"], where
    elif kind == "boolean":
        assert isinstance(value, bool), where
    elif kind == "option":
        options = [o["id"] for o in _variables_of(template)[spec["of"]]["values"]]
        assert value in options, where
    else:
        raise AssertionError(f"unknown attribute type {kind}")


def _variables_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in template["variables"]}


def test_every_gold_label_is_one_the_spec_lists(template_id: str) -> None:
    template = TEMPLATES[template_id]
    variables = _variables(template_id)
    for row in read_rows(template_id):
        gold = row["gold"]
        assert set(gold) == set(variables) | {PAIRS, ATTRIBUTES}, row["id"]
        for variable_id, variable in variables.items():
            value = gold[variable_id]
            if variable["kind"] == "presence":
                assert value in PRESENCE, (row["id"], variable_id, value)
            elif value == NOT_MENTIONED:
                continue
            elif variable["kind"] == "enum":
                assert value in [o["id"] for o in variable["values"]], (row["id"], variable_id)
            elif variable["kind"] == "ordinal":
                low, high = variable["scale"]
                assert isinstance(value, int) and low <= value <= high, (row["id"], variable_id)
            else:
                low, high = variable["range"]
                assert _number(value) and low <= value <= high, (row["id"], variable_id)
        for variable_id, attributes in gold[ATTRIBUTES]:
            variable = variables[variable_id]
            assert attributes, (row["id"], variable_id, "an empty instance")
            if variable["kind"] == "presence":
                assert gold[variable_id] in ("present", "uncertain"), (row["id"], variable_id)
            else:
                assert gold[variable_id] != NOT_MENTIONED, (row["id"], variable_id)
            for key, value in attributes.items():
                assert key in variable["attributes"], (row["id"], variable_id, key)
                _check_attribute(template, variable, key, value)
        projected = [[v, site] for v, attributes in gold[ATTRIBUTES]
                     for site in attributes.get("site", [])]  # fmt: skip
        assert sorted(map(tuple, gold[PAIRS])) == sorted(set(map(tuple, projected))), row["id"]
        for variable_id, site in gold[PAIRS]:
            assert gold[variable_id] in ("present", "uncertain"), (row["id"], variable_id)
            assert site in variables[variable_id]["locations"], (row["id"], site)


def test_each_language_and_half_meets_the_minimums(template_id: str) -> None:
    rows = read_rows(template_id)
    assert len(rows) >= MINIMUMS["reports"]
    languages = Counter(row["language"] for row in rows)
    assert min(languages[lang] for lang in SPEC["languages"]) >= MINIMUMS["per_language"], languages
    halves = Counter((row["language"], row["split"]) for row in rows)
    assert min(halves[(lang, half)] for lang in SPEC["languages"] for half in SPLITS) >= 4, halves
    for variable in TEMPLATES[template_id]["variables"]:
        if not variable["main"]:
            continue
        if variable["kind"] == "presence":
            count = Counter(
                row["split"] for row in rows if row["gold"][variable["id"]] == "present"
            )
        else:
            count = Counter(
                row["split"] for row in rows if row["gold"][variable["id"]] != NOT_MENTIONED
            )
        assert count["dev"] + count["test"] >= MINIMUMS["main_positives"], (variable["id"], count)
        assert min(count["dev"], count["test"]) >= MINIMUMS["main_positives_per_half"], (
            variable["id"],
            count,
        )


def test_every_set_has_normal_studies_negations_hedges_and_several_styles(template_id: str) -> None:
    rows = read_rows(template_id)
    presence = [v["id"] for v in TEMPLATES[template_id]["variables"] if v["kind"] == "presence"]
    labels = Counter(row["gold"][v] for row in rows for v in presence)
    assert labels["absent"] >= 20 and labels["uncertain"] >= 2, labels
    normal = [row for row in rows if not any(row["gold"][v] == "present" for v in presence)]
    assert len(normal) >= 2, "normal studies"
    assert any(re.search(r"[A-Za-z]", r["text"]) and r["text"] == r["text"].upper() for r in rows)
    wrapped = [r for r in rows if re.search(r"[a-zäöüß,0-9]\n[a-zäöüß0-9(]", r["text"])]
    assert wrapped, "some reports are hard-wrapped mid-sentence"


def test_the_consistency_rules_of_the_spec_hold(template_id: str) -> None:
    for row in read_rows(template_id):
        gold, instances = row["gold"], row["gold"][ATTRIBUTES]
        if template_id == "head_ct":
            compartments = [
                v for v in gold if v.endswith("_haemorrhage") and v != "intracranial_haemorrhage"
            ]
            if any(gold[c] == "present" for c in compartments):
                assert gold["intracranial_haemorrhage"] == "present", row["id"]
            if gold["intracranial_haemorrhage"] == "absent":
                assert all(gold[c] == "absent" for c in compartments), row["id"]
            if gold["midline_shift_mm"] != NOT_MENTIONED:
                assert gold["midline_shift"] == "present", row["id"]
        if template_id == "thyroid_us":
            levels = [a["tirads"] for v, a in instances if v == "thyroid_nodule" and "tirads" in a]
            for _variable, a in instances:
                if "points" in a:
                    assert a["tirads"] == _tirads_level(a["points"]), (row["id"], a)
            if levels:
                assert gold["tirads_highest"] == max(levels), row["id"]
            if gold["tirads_highest"] != NOT_MENTIONED:
                assert gold["thyroid_nodule"] in ("present", "uncertain"), row["id"]
        if template_id == "breast":
            sides = [a["category"] for v, a in instances if v == "birads" and "category" in a]
            if sides:
                assert gold["birads"] == max(sides, key=BIRADS_ORDER.index), row["id"]


# --- routing -----------------------------------------------------------------------------------


def test_routing_cases_have_the_schema_and_name_known_templates() -> None:
    rows = read_rows("routing")
    assert len(rows) >= MINIMUMS["routing_records"]
    known = set(TEMPLATES) | set(SPEC["existing_templates"])
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids))
    for row in rows:
        assert ROUTING_KEYS <= set(row) <= ROUTING_KEYS | ROUTING_OPTIONAL, row["id"]
        assert isinstance(row["text"], str) and row["text"].strip(), row["id"]
        assert re.fullmatch(r"[a-z]{2}", row["language"]), row["id"]
        assert row["modality"] is None or re.fullmatch(r"[A-Z]{2}", row["modality"]), row["id"]
        assert row["exam"] is None or row["exam"].strip(), row["id"]
        expected = row["expected_templates"]
        assert isinstance(expected, list) and set(expected) <= known, row["id"]
        assert len(expected) == len(set(expected)), row["id"]
        assert row["note"].strip(), row["id"]
        if "procedure_code" in row:
            assert set(row["procedure_code"]) == {"system", "code", "display"}, row["id"]


def test_routing_cases_cover_each_way_in_and_the_bad_inputs() -> None:
    rows = read_rows("routing")
    for template_id in TEMPLATES:
        mine = [r for r in rows if r["expected_templates"] == [template_id]]
        assert any(r["exam"] for r in mine), (template_id, "by exam line")
        assert any(not r["exam"] and r.get("body_part") and r["modality"] for r in mine), (
            template_id,
            "by modality + body part",
        )
        assert any(
            not r["exam"] and not r.get("body_part") and "procedure_code" not in r for r in mine
        ), (template_id, "by text only")
    chest = [r for r in rows if r["expected_templates"] == ["chest_findings"] and not r["exam"]
             and r["modality"] in ("CR", "DX")]  # fmt: skip
    assert len(chest) >= 3, "normal chest radiographs without an exam line"
    assert any(len(r["expected_templates"]) == 2 for r in rows), "two exams in one"
    assert sum(r["expected_templates"] == [] for r in rows) >= 3, "no_template cases"
    assert any(r["language"] not in SPEC["languages"] for r in rows), (
        "an exam line in another language"
    )
    assert any(
        "procedure_code" in r and not r["procedure_code"]["system"].endswith("loinc.org")
        for r in rows
    )
