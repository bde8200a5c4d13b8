"""The checks every built-in template with a hand-written labelled set passes: verified codes,
a complete gold standard, routing of its own reports here and of the other sets' reports not.

What is specific to one template (its variables, options, units, languages, stage-1 floors, a
real-model run) stays in its own file (tests/test_template_<id>.py; chest_findings, the X-ray
template, in tests/test_template_chest_ct.py). Issue 21's templates have their own parametrised
module (tests/test_templates_issue21.py: codes, gold, routing among all built-ins, eval gates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from mappings import terminology
from mappings.routing import applies, route
from mappings.template import Template, load_template
from tests.labelled import (
    as_report,
    assert_codes_verified,
    assert_gold_complete,
    modality_of,
    other_rows,
    read_rows,
    template_codes,
    template_path,
)


@dataclass(frozen=True)
class Labelled:
    """A built-in template's labelled set and how its reports come."""

    modality: str
    """The modality its reports carry."""
    foreign: str
    """A modality its reports never come with: nothing routes here with it."""
    min_rows: int
    extra_gold: frozenset[str] = frozenset()
    """Gold keys beside the variables (episodes, lesion-location pairs)."""
    brain: bool = False
    """A brain template: an empty brain report (nothing to extract) may go to either brain
    template, so the other sets' empty reports are not checked against it."""


SETS: dict[str, Labelled] = {
    "brain_mri_memory": Labelled("MR", "CT", 50, brain=True),
    "brain_mri_oncology": Labelled("MR", "CT", 14, frozenset({"_episodes"}), brain=True),
    "cardiac_mri": Labelled("MR", "CT", 50),
    "chest_ct": Labelled("CT", "MR", 14, frozenset({"_pairs"})),
    "chest_findings": Labelled("CR", "MR", 12, frozenset({"_pairs"})),
}


@pytest.fixture(params=sorted(SETS), scope="module")
def template_id(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def template(template_id: str) -> Template:
    return load_template(template_path(template_id))


@pytest.fixture(scope="module")
def rows(template_id: str) -> list[dict[str, Any]]:
    return read_rows(template_id)


def _empty(row: dict[str, Any]) -> bool:
    return {v for k, v in row["gold"].items() if not k.startswith("_")} == {"not_mentioned"}


def test_every_code_is_verified_and_every_uncoded_concept_says_why(template: Template) -> None:
    locations = [loc.code for loc in template.locations if loc.code is not None]
    assert_codes_verified([*template_codes(template), *locations])
    for variable in template.variables:
        if variable.code is None:
            assert variable.id in terminology.UNCODED_CONCEPTS, variable.id
            assert variable.uncoded_reason, variable.id
        for option in variable.options:
            assert option.code is not None or option.uncoded_reason, option.id


def test_labelled_set_is_split_and_its_gold_complete(
    template_id: str, template: Template, rows: list[dict[str, Any]]
) -> None:
    labelled = SETS[template_id]
    assert len(rows) >= labelled.min_rows
    assert {row["split"] for row in rows} == {"dev", "test"}
    ids = {v.id for v in template.variables}
    for row in rows:
        assert set(row["gold"]) == {*ids, *labelled.extra_gold}, row["id"]
    assert_gold_complete(template, [
        {**row, "gold": {k: v for k, v in row["gold"].items() if not k.startswith("_")}}
        for row in rows
    ])  # fmt: skip


def test_every_labelled_report_routes_here(
    template_id: str, template: Template, rows: list[dict[str, Any]]
) -> None:
    """With its modality or none; never with a modality its exams do not have."""
    labelled = SETS[template_id]
    for row in rows:
        for modality in (labelled.modality, None):
            assert applies(template, as_report(row, modality)), (row["id"], modality)
        assert route(as_report(row, labelled.foreign), [template]) == [], row["id"]


def test_other_sets_reports_do_not_route_here(template_id: str, template: Template) -> None:
    """Other templates' reports, with the modality their exam has or none."""
    others = list(other_rows(template_id))
    assert others
    for name, row in others:
        if SETS[template_id].brain and _empty(row):
            continue  # an empty brain report: content cannot choose between the brain templates
        for modality in (modality_of(row), None):
            assert not applies(template, as_report(row, modality)), (name, row["id"], modality)
