"""workers/llm_stage.py around the engine: parsing, evidence downgrades, locations, confidence.

A FAKE engine and hand-built `Generation` objects stand in for the model here: these are unit
tests of the code around the engine (the real model runs in tests/test_engine.py).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from adapter.settings import Settings
from mappings.report import FindingStatus, FindingValue, Report, Stage
from mappings.template import get_template
from mappings.template_output import VariableAnswer
from mappings.units import flowed
from tests.fakes import FakeEngine, fake_generation
from workers.errors import ExtractionError
from workers.llm_stage import extract, finding_value, status_confidences

TEMPLATE = get_template("chest_findings")
TEXT = "FINDINGS:\nSmall right  pleural\neffusion. No pneumothorax.\nGröße ±2 cm; 우측 폐 consolidation."
REPORT = Report(source_format="hl7v2", report_id="r1", text=TEXT)


def _value(answer: VariableAnswer, variable: str = "pleural_effusion") -> FindingValue:
    return finding_value(REPORT, TEMPLATE, variable, answer, 0.8)


def test_found_quote_is_kept_with_offsets_into_the_report() -> None:
    value = _value(
        VariableAnswer(
            evidence="small right pleural effusion",
            status=FindingStatus.PRESENT,
            locations=["right_lung"],
        )
    )
    assert value.status is FindingStatus.PRESENT and value.stage is Stage.LLM
    assert value.evidence is not None and value.evidence.verified
    assert TEXT[value.evidence.start : value.evidence.end] == "Small right  pleural\neffusion"  # type: ignore[index]
    assert value.confidence == 0.8 and value.locations == ("right_lung",) and value.flags == ()


def test_quote_not_found_downgrades_present_to_uncertain() -> None:
    value = _value(
        VariableAnswer(evidence="large left effusion", status=FindingStatus.PRESENT, locations=None)
    )
    assert value.status is FindingStatus.UNCERTAIN
    assert value.flags == ("evidence_not_found",)
    assert value.confidence == 0.4
    assert value.evidence is not None and not value.evidence.verified


def test_missing_or_trivial_quote_downgrades_absent() -> None:
    missing = _value(
        VariableAnswer(evidence=None, status=FindingStatus.ABSENT, locations=None), "pneumothorax"
    )
    assert (missing.status, missing.flags) == (FindingStatus.UNCERTAIN, ("evidence_missing",))
    trivial = _value(
        VariableAnswer(evidence="No", status=FindingStatus.ABSENT, locations=None), "pneumothorax"
    )
    assert (trivial.status, trivial.flags) == (FindingStatus.UNCERTAIN, ("evidence_too_short",))
    assert trivial.confidence == 0.4


def test_uncertain_without_quote_stays_uncertain_but_is_flagged() -> None:
    value = _value(VariableAnswer(evidence=None, status=FindingStatus.UNCERTAIN, locations=None))
    assert (value.status, value.flags, value.confidence) == (
        FindingStatus.UNCERTAIN,
        ("evidence_missing",),
        0.4,
    )


def test_not_mentioned_needs_no_evidence_and_unknown_locations_are_dropped() -> None:
    value = _value(
        VariableAnswer(evidence=None, status=FindingStatus.NOT_MENTIONED, locations=None)
    )
    assert value.status is FindingStatus.NOT_MENTIONED and value.flags == ()
    odd = _value(
        VariableAnswer(
            evidence="small right pleural effusion",
            status=FindingStatus.PRESENT,
            locations=["right_lung", "right_upper_lobe"],
        )
    )
    assert odd.locations == ("right_lung",) and odd.flags == ("unknown_location_dropped",)


def test_status_confidence_from_the_first_free_token_of_the_value() -> None:
    generation = fake_generation(
        [
            ('{"a":{"evidence":"', 0.0, True),
            ("status is", -2.0, False),  # inside the evidence: must not count
            ('","status', 0.0, True),
            ('":"pres', -0.5, False),  # straddles the value start: the distinguishing token
            ('ent","locations":null},"b":{"evidence":null,"status":"', 0.0, True),
            ('not_mentioned","locations":null}}', 0.0, True),  # all forced
        ]
    )
    assert status_confidences(generation, ["a", "b"]) == {
        "a": round(math.exp(-0.5), 4),
        "b": 1.0,
    }


def _answer(**overrides: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {
        v.id: {"evidence": None, "status": "not_mentioned", "locations": None}
        for v in TEMPLATE.variables
    }
    answer.update(overrides)
    return answer


def test_extract_with_a_fake_engine_builds_the_extraction() -> None:
    engine = FakeEngine(
        _answer(
            pleural_effusion={
                "evidence": "Small right pleural effusion",
                "status": "present",
                "locations": ["right_lung"],
            },
            pneumothorax={
                "evidence": "no tension pneumothorax",
                "status": "absent",
                "locations": None,
            },
        )
    )
    extraction = extract(REPORT, TEMPLATE, engine, settings=Settings(), hints="h1")
    assert extraction.stage is Stage.LLM and extraction.model.name == "fake"
    assert [v.variable_id for v in extraction.values] == [v.id for v in TEMPLATE.variables]
    effusion = extraction.value_of("pleural_effusion")
    assert effusion is not None and effusion.status is FindingStatus.PRESENT
    pneumothorax = extraction.value_of("pneumothorax")
    assert pneumothorax is not None and pneumothorax.flags == ("evidence_not_found",)
    assert pneumothorax.status is FindingStatus.UNCERTAIN
    assert extraction.timings.prompt_tokens_evaluated == 40
    assert extraction.timings.forced_tokens == 60
    # the report as units (its wrapped "pleural⏎effusion" joined), then the hints
    assert engine.prompts[0].index(flowed(TEXT)) < engine.prompts[0].index("h1")
    assert "Small right  pleural effusion. No pneumothorax.\n" in engine.prompts[0]


@pytest.mark.parametrize(
    "bad",
    [
        '{"pleural_effusion": {"evidence": null}}',  # incomplete
        json.dumps(
            _answer(pleural_effusion={"evidence": None, "status": "maybe", "locations": None})
        ),
        "not json",
    ],
)
def test_invalid_model_output_is_an_error_never_a_default(bad: str) -> None:
    with pytest.raises(ExtractionError):
        extract(REPORT, TEMPLATE, FakeEngine(bad), settings=Settings())
