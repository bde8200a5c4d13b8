"""FHIR search read by FHIR R4's rules (pure: mappings/fhir_dates.py, search_params.py,
search_query.py, fhir_responses.py): date ranges by precision, tokens, references, modifiers,
comma = OR, repeat = AND, strict and lenient handling, and the self link."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from mappings.errors import FhirMappingError
from mappings.fhir_dates import LATEST, fhir_range
from mappings.fhir_responses import searchset
from mappings.search_params import index_terms
from mappings.search_query import (
    DateValue,
    SearchRefused,
    SearchUnsupported,
    Token,
    parse_search,
    strict_handling,
)

BASE = "https://radbridge.example/fhir"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2024", utc(2024, 1, 1), utc(2025, 1, 1)),
        ("2024-02", utc(2024, 2, 1), utc(2024, 3, 1)),
        ("2024-12", utc(2024, 12, 1), utc(2025, 1, 1)),
        ("2024-02-29", utc(2024, 2, 29), utc(2024, 3, 1)),
        ("2024-03-15T10:00", utc(2024, 3, 15, 10), utc(2024, 3, 15, 10, 1)),
        ("2024-03-15T10:00:05Z", utc(2024, 3, 15, 10, 0, 5), utc(2024, 3, 15, 10, 0, 6)),
        (
            "2024-03-15T10:00:05.25Z",
            utc(2024, 3, 15, 10, 0, 5, 250000),
            utc(2024, 3, 15, 10, 0, 5, 260000),
        ),
        ("2024-03-15T10:00:00+02:00", utc(2024, 3, 15, 8), utc(2024, 3, 15, 8, 0, 1)),
        ("9999", utc(9999, 1, 1), LATEST),
    ],
)
def test_a_date_stands_for_the_range_of_its_precision(
    text: str, start: datetime, end: datetime
) -> None:
    assert fhir_range(text) == (start, end)


def test_a_date_without_zone_is_read_in_the_hospitals_zone() -> None:
    amsterdam = ZoneInfo("Europe/Amsterdam")
    assert fhir_range("2024-03-15", amsterdam) == (utc(2024, 3, 14, 23), utc(2024, 3, 15, 23))


@pytest.mark.parametrize("text", ["2024-13", "2024-02-30", "24-01-01", "2024-01-01T25:00", "today"])
def test_a_malformed_date_is_refused(text: str) -> None:
    with pytest.raises(FhirMappingError):
        fhir_range(text)


def test_comma_is_or_and_a_repeated_parameter_is_and() -> None:
    query = parse_search(
        "Observation",
        [("status", "final,amended"), ("date", "ge2024-01-01"), ("date", "lt2024-02")],
        strict=True,
        base_url=BASE,
    )
    status, low, high = query.criteria
    assert status.values == (Token(None, "final"), Token(None, "amended"))
    assert low.values == (DateValue("ge", utc(2024, 1, 1), utc(2024, 1, 2)),)
    assert high.values == (DateValue("lt", utc(2024, 2, 1), utc(2024, 3, 1)),)


def test_token_forms_and_escapes() -> None:
    query = parse_search(
        "Observation",
        [("code", r"http://snomed.info/sct|60046008,|plain,http://loinc.org|,a\,b\|c")],
        strict=True,
        base_url=BASE,
    )
    assert query.criteria[0].values == (
        Token("http://snomed.info/sct", "60046008"),
        Token("", "plain"),
        Token("http://loinc.org", None),
        Token(None, "a,b|c"),
    )
    with pytest.raises(SearchRefused):
        parse_search("Observation", [("code", "a|b|c")], strict=True, base_url=BASE)


def test_reference_forms_type_modifier_and_this_servers_absolute_url() -> None:
    values = [
        ("subject", "Patient/p1"),
        ("subject", "p2"),
        ("subject:Patient", "p3"),
        ("subject", f"{BASE}/Patient/p4"),
        ("patient", "Patient/p5/_history/3"),
    ]
    query = parse_search("Observation", values, strict=True, base_url=BASE)
    assert [c.values[0] for c in query.criteria] == [
        Token("Patient", "p1"),
        Token(None, "p2"),
        Token("Patient", "p3"),
        Token("Patient", "p4"),
        Token("Patient", "p5"),
    ]
    for bad in [
        ("patient", "Group/g1"),  # patient references Patients only
        ("subject", "https://elsewhere.example/fhir/Patient/p1"),
        ("subject:Patient", "Group/g1"),
    ]:
        with pytest.raises(SearchRefused):
            parse_search("Observation", [bad], strict=True, base_url=BASE)


def test_unknown_parameters_are_refused_under_strict_and_ignored_and_unlinked_otherwise() -> None:
    items = [
        ("stauts", "final"),
        ("code", "60046008"),
        ("_include", "Observation:subject"),
        ("subject:Patient.identifier", "x|1"),  # chained: unknown here
    ]
    with pytest.raises(SearchUnsupported, match="stauts"):
        parse_search("Observation", items, strict=True, base_url=BASE)
    query = parse_search("Observation", items, strict=False, base_url=BASE)
    assert [c.param.name for c in query.criteria] == ["code"]
    assert query.used == (("code", "60046008"),)
    assert len(query.ignored) == 3
    bundle = searchset(BASE, query, 0, [])
    self_link = bundle["link"][0]["url"]
    assert (
        "code=60046008" in self_link and "stauts" not in self_link and "_include" not in self_link
    )
    outcome = bundle["entry"][-1]
    assert outcome["search"]["mode"] == "outcome"
    assert {i["code"] for i in outcome["resource"]["issue"]} == {"not-supported"}


@pytest.mark.parametrize(
    "items",
    [
        [("status:text", "final")],  # a modifier radbridge does not support: never ignored
        [("date", "ap2024-01-01")],  # approximate is not supported
        [("date:missing", "true")],
        [("subject:identifier", "x|1")],
    ],
)
def test_unsupported_modifiers_and_prefixes_are_refused_even_when_lenient(
    items: list[tuple[str, str]],
) -> None:
    with pytest.raises(SearchUnsupported):
        parse_search("Observation", items, strict=False, base_url=BASE)


def test_prefer_header_reading() -> None:
    assert strict_handling("handling=strict")
    assert strict_handling("return=minimal, handling=strict")
    assert strict_handling('handling="strict"')
    assert not strict_handling("handling=lenient")
    assert not strict_handling(None)


def test_count_sort_summary_and_limits() -> None:
    query = parse_search(
        "Observation",
        [("_count", "5"), ("_sort", "-date,_id"), ("_total", "accurate")],
        strict=True,
        base_url=BASE,
    )
    assert query.count == 5 and query.sort == (("date", True), ("_id", False))
    assert (
        parse_search("Observation", [("_summary", "count")], strict=True, base_url=BASE).count == 0
    )
    for bad in ([("_count", "-1")], [("_count", "1001")], [("_count", "1"), ("_count", "2")]):
        with pytest.raises(SearchRefused):
            parse_search("Observation", bad, strict=True, base_url=BASE)
    with pytest.raises(SearchRefused, match="more than 100 values"):
        parse_search("Observation", [("_id", ",".join("x" * 101))], strict=True, base_url=BASE)


def test_index_terms_follow_the_parameter_table() -> None:
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "category": [{"coding": [{"system": "c", "code": "imaging"}]}],
        "code": {"coding": [{"system": "s", "code": "1"}, {"system": "t", "code": "2"}]},
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2024-03-15"},
        "derivedFrom": [{"reference": "Observation/o0/_history/2"}],
        "device": {"reference": "urn:uuid:not-searchable"},
        "identifier": [{"value": "x" * 300}],
    }
    terms = index_terms(observation)
    assert terms.tokens == {
        ("category", "c", "imaging"),
        ("code", "s", "1"),
        ("code", "t", "2"),
        ("derived-from", "Observation", "o0"),
    }
    assert terms.skipped == 1  # the identifier longer than the index holds
    assert (terms.date_start, terms.date_end) == (utc(2024, 3, 15), LATEST)
