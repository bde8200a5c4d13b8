"""The output check of every built Bundle (issue 25, `mappings.output_check`): the official R4
JSON schema compiled once per type, or without it the R4B models; what it refuses, that its
messages never carry the value, that the Bundles are the ones the R4B models used to emit, and
the language guess that no longer lists a report's words (memory)."""

from __future__ import annotations

import copy
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapter.settings import Settings
from mappings import output_check
from mappings.errors import FhirMappingError
from mappings.language import detect_language
from mappings.template import load_builtin_templates
from tests.labelled import MODALITY_OF_TEMPLATE, as_report, read_rows
from workers.process import process_reports

CANARY = "PHI-CANARY-4711"


@pytest.fixture
def schema_check(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The schema check, on the official R4 schema of ../shared when none is installed."""
    if output_check.schema_path() is None:
        shared: Path = request.getfixturevalue("shared_dir")
        schema = shared / "fixtures" / "fhir-r4" / "fhir.schema.json"
        monkeypatch.setenv(output_check.SCHEMA_ENV, str(schema))
    output_check._checker.cache_clear()
    yield
    output_check._checker.cache_clear()


def bundles() -> list[dict[str, Any]]:
    """The Bundles of every labelled report (all built-in templates), rules stage."""
    reports = [
        as_report(row, modality)
        for template, modality in MODALITY_OF_TEMPLATE.items()
        for row in read_rows(template)
    ]
    settings = Settings(stage="rules")
    outcome = process_reports(reports, list(load_builtin_templates().values()), settings, _none)
    assert not outcome.rejected or all(r.reason == "no_template" for r in outcome.rejected)
    return [r.bundle for r in outcome.results if r.bundle is not None]


def _none() -> Any:
    raise AssertionError("no model in the rules stage")


def broken_copies(bundle: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, Bundle) with one element of one Observation broken, the bad value a canary."""
    index = next(
        i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == "Observation"
    )
    cases = []
    for where, change in (
        ("status", lambda o: o.update(status=CANARY)),  # outside the required value set
        ("id", lambda o: o.update(id=f"{CANARY} x")),  # not an id
        ("code.text", lambda o: o["code"].update(text="")),  # an empty string
        ("valueCodeableConcept", lambda o: o.update(valueCodeableConcept=CANARY)),
    ):
        copied = copy.deepcopy(bundle)
        change(copied["entry"][index]["resource"])
        cases.append((f"Bundle.entry[{index}].resource.{where}", copied))
    return cases


def test_built_bundles_pass_and_are_what_the_models_emitted(schema_check: None) -> None:
    """Every Bundle passes; each resource is exactly what the R4B models' validate-and-dump
    made of it before issue 25 (dates in UTC as `Z`)."""
    from fhir.resources.R4B import get_fhir_model_class

    built = bundles()
    assert len(built) > 100
    for bundle in built:
        output_check.check_bundle(bundle)
        for entry in bundle["entry"]:
            resource = entry["resource"]
            model = get_fhir_model_class(resource["resourceType"])
            dumped = model.model_validate(resource).model_dump(
                mode="json", by_alias=True, exclude_none=True
            )
            assert json.dumps(dumped, sort_keys=True) == json.dumps(resource, sort_keys=True)


def test_the_schema_refuses_each_broken_element_naming_it_not_its_value(
    schema_check: None,
) -> None:
    assert isinstance(output_check._checker(), output_check._SchemaCheck)
    for where, bundle in broken_copies(bundles()[0]):
        with pytest.raises(FhirMappingError) as caught:
            output_check.check_bundle(bundle)
        message = str(caught.value)
        assert where.split(".")[-1] in message and "Observation" in message, message
        assert CANARY not in message


def test_without_the_schema_the_models_check_the_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback refuses what the models can see (they let a status outside its value set
    through: the reason the schema is the check)."""
    check = output_check._ModelCheck()
    bundle = bundles()[0]
    check.bundle(bundle)
    refused = []
    for where, broken in broken_copies(bundle):
        try:
            check.bundle(broken)
        except FhirMappingError as exc:
            assert CANARY not in str(exc)
            refused.append(where.rsplit(".", 1)[-1])
    assert refused == ["id", "text", "valueCodeableConcept"]


def test_the_language_guess_reads_a_large_report_as_a_stream() -> None:
    """A 6 MB report: the guess allocates next to nothing (before issue 25 it listed every
    letter and word: ~155 MB for this text)."""
    text = "Findings: small left pleural effusion. No pneumothorax. " * 110_000
    tracemalloc.start()
    try:
        assert detect_language(text) == "en"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak
    assert detect_language("폐 결절 없음 the lung") == "ko"
    assert detect_language("Geen pleuravocht. Het hart is niet vergroot.") == "nl"
