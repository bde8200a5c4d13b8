"""Typed variables (ordinal, number, enum, presence qualifier) through the LLM output contract,
the evidence checks, confidences and the hybrid merge.

Hand-built answers and `Generation` objects stand in for the model in the unit tests; the last
test runs the real SmolLM2 model through `workers.engine` on the typed test template.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from adapter.settings import Settings
from mappings.report import Evidence, FindingStatus, FindingValue, Report, Stage
from mappings.template import Template, load_template
from mappings.template_output import TypedAnswer, VariableAnswer, output_json_schema, output_model
from tests.fakes import FakeEngine, fake_generation
from workers.errors import ExtractionError
from workers.llm_stage import (
    extract,
    finding_value,
    max_tokens_for,
    status_confidences,
    typed_value,
)
from workers.prompt import answer_format, system_text
from workers.rules_stage import variable_spans
from workers.stages import hints_text, merge_values

TYPED: Template = load_template(
    Path(__file__).resolve().parent / "fixtures" / "templates" / "typed_demo.yaml"
)
TEXT = (
    "FINDINGS: White matter lesions, Fazekas grade 2. LVEF 45,5 % (biplane).\n"
    "Mild cardiomegaly. Small right pleural effusion, unchanged.\n"
    "IMPRESSION: Stable right effusion."
)
REPORT = Report(source_format="hl7v2", report_id="t1", text=TEXT, language="en")


def _silent() -> dict[str, Any]:
    return {
        "fazekas": {"evidence": None, "value": None},
        "lvef": {"evidence": None, "value": None},
        "heart_size": {"evidence": None, "value": None},
        "pleural_effusion": {
            "evidence": None,
            "status": "not_mentioned",
            "locations": None,
            "episode": None,
        },
    }


# --- schema and output model -------------------------------------------------------------


def test_typed_schema_quote_first_then_value_and_exclusive_branches() -> None:
    schema = output_json_schema(TYPED)
    stated, silent = schema["properties"]["fazekas"]["anyOf"]
    assert list(stated["properties"]) == ["evidence", "value"]
    assert stated["required"] == ["evidence", "value"]
    assert stated["properties"]["value"] == {"type": "integer", "minimum": 0, "maximum": 3}
    assert silent["properties"] == {"evidence": {"type": "null"}, "value": {"type": "null"}}
    lvef = schema["properties"]["lvef"]["anyOf"][0]["properties"]["value"]
    assert lvef == {"type": "number", "minimum": 0.0, "maximum": 100.0}
    heart = schema["properties"]["heart_size"]["anyOf"][0]["properties"]["value"]
    assert heart == {"enum": ["enlarged", "normal_size"]}
    effusion, effusion_silent = schema["properties"]["pleural_effusion"]["anyOf"]
    assert list(effusion["properties"]) == ["evidence", "status", "locations", "episode"]
    assert effusion["properties"]["episode"] == {
        "anyOf": [{"enum": ["progression", "stable", "improvement"]}, {"type": "null"}]
    }
    assert effusion_silent["properties"]["episode"] == {"type": "null"}
    for variable in schema["properties"].values():
        for branch in variable["anyOf"]:
            assert branch["additionalProperties"] is False
            assert branch["required"] == list(branch["properties"])


def test_schema_and_model_accept_a_typed_answer_and_refuse_bad_values() -> None:
    schema = output_json_schema(TYPED)
    model = output_model(TYPED)
    answer = _silent()
    answer["fazekas"] = {"evidence": "Fazekas grade 2", "value": 2}
    answer["lvef"] = {"evidence": "LVEF 45,5 %", "value": 45.5}
    answer["heart_size"] = {"evidence": "Mild cardiomegaly", "value": "enlarged"}
    answer["pleural_effusion"] = {
        "evidence": "Small right pleural effusion, unchanged",
        "status": "present",
        "locations": ["right_lung"],
        "episode": "stable",
    }
    jsonschema.validate(answer, schema)
    parsed = model.model_validate(answer)
    assert parsed.fazekas.value == 2  # type: ignore[attr-defined]
    assert parsed.pleural_effusion.episode == "stable"  # type: ignore[attr-defined]
    for variable, bad in [
        ("fazekas", {"evidence": "Fazekas grade 4", "value": 4}),
        ("fazekas", {"evidence": "Fazekas grade 2", "value": 2.5}),
        ("lvef", {"evidence": "LVEF 120", "value": 120}),
        ("heart_size", {"evidence": "Mild cardiomegaly", "value": "huge"}),
        ("heart_size", {"evidence": None, "value": "enlarged"}),  # a value needs a quote
    ]:
        broken = {**answer, variable: bad}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
        if bad["evidence"] is not None:
            with pytest.raises(ValueError):
                model.model_validate(broken)


def test_typed_schema_compiles_with_llguidance() -> None:
    import llguidance

    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        output_json_schema(TYPED), defaults={"whitespace_flexible": False}
    )
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    assert not is_error, messages


# --- prompt ------------------------------------------------------------------------------


def test_prompt_describes_each_type_and_stays_a_shared_prefix() -> None:
    system = system_text(TYPED)
    assert system == system_text(TYPED)
    assert "fazekas [ordinal]" in system and "value: integer 0 to 3" in system
    assert "lvef [number]" in system and "value: number in %, 0 to 100" in system
    assert "heart_size [enum]" in system and "enlarged = Cardiomegaly" in system
    assert "episode (Episode, when present): one of progression" in system
    fmt = answer_format(TYPED)
    assert '"value": <the value as described>|null' in fmt
    assert '"episode": "<option id>"|null' in fmt


def test_template_max_tokens_raises_the_cap_only() -> None:
    assert max_tokens_for(TYPED, Settings(max_tokens=512)) == 900
    assert max_tokens_for(TYPED, Settings(max_tokens=2000)) == 2000


# --- finding_value -------------------------------------------------------------------------


def _typed(variable: str, evidence: str | None, value: Any, **kw: Any) -> FindingValue:
    answer = TypedAnswer(evidence=evidence, value=value)
    return finding_value(REPORT, TYPED, variable, answer, 0.8, **kw)


def test_stated_values_are_present_with_typed_value_and_unit() -> None:
    fazekas = _typed("fazekas", "Fazekas grade 2", 2)
    assert (fazekas.status, fazekas.value, fazekas.unit) == (FindingStatus.PRESENT, 2, None)
    assert fazekas.evidence is not None and fazekas.evidence.verified
    lvef = _typed("lvef", "LVEF 45,5 %", 45.5)
    assert (lvef.status, lvef.value, lvef.unit) == (FindingStatus.PRESENT, 45.5, "%")
    heart = _typed("heart_size", "Mild cardiomegaly", "enlarged")
    assert (heart.value, heart.flags, heart.confidence) == ("enlarged", (), 0.8)


def test_null_value_is_not_mentioned() -> None:
    value = _typed("fazekas", None, None)
    assert (value.status, value.value, value.evidence) == (FindingStatus.NOT_MENTIONED, None, None)


@pytest.mark.parametrize(
    ("variable", "evidence", "raw", "flag"),
    [
        ("fazekas", "Fazekas grade 3", 3, "evidence_not_found"),
        ("fazekas", None, 2, "evidence_missing"),
        ("lvef", "LV", 45.5, "evidence_too_short"),
        ("lvef", "(biplane)", 45.5, "evidence_off_topic"),
    ],
)
def test_bad_evidence_downgrades_a_typed_value_to_uncertain(
    variable: str, evidence: str | None, raw: Any, flag: str
) -> None:
    value = _typed(variable, evidence, raw)
    assert value.status is FindingStatus.UNCERTAIN
    assert value.value == raw  # kept, but no longer `present`
    assert value.flags == (flag,) and value.confidence == 0.4


def test_values_outside_scale_range_or_options_are_dropped_and_flagged() -> None:
    assert typed_value(TYPED.variable("fazekas"), 2.0) == 2
    assert typed_value(TYPED.variable("fazekas"), True) is None
    assert typed_value(TYPED.variable("lvef"), float("nan")) is None
    for variable, raw in [("fazekas", 7), ("lvef", 101.0), ("heart_size", "huge")]:
        value = _typed(variable, "Fazekas grade 2", raw)
        assert value.status is FindingStatus.UNCERTAIN and value.value is None
        assert "value_invalid" in value.flags


def test_off_topic_quote_is_kept_when_it_overlaps_a_stage1_span() -> None:
    spans = variable_spans(REPORT, TYPED)["lvef"]
    assert spans  # stage 1 found the LVEF clause
    value = _typed("lvef", "(biplane)", 45.5, stage1_spans=spans)
    assert value.status is FindingStatus.PRESENT and value.flags == ()
    other = _typed("lvef", "Mild cardiomegaly", 45.5, stage1_spans=spans)
    assert other.flags == ("evidence_off_topic",)


def test_presence_off_topic_quote_is_downgraded() -> None:
    answer = VariableAnswer(
        evidence="Mild cardiomegaly", status=FindingStatus.ABSENT, locations=None
    )
    value = finding_value(REPORT, TYPED, "pleural_effusion", answer, 0.6)
    assert value.status is FindingStatus.UNCERTAIN and value.flags == ("evidence_off_topic",)


def test_qualifier_goes_to_value_and_is_dropped_for_absent_findings() -> None:
    model = output_model(TYPED)
    answer = _silent()
    answer["pleural_effusion"] = {
        "evidence": "Small right pleural effusion, unchanged",
        "status": "present",
        "locations": ["right_lung"],
        "episode": "stable",
    }
    parsed = model.model_validate(answer).pleural_effusion  # type: ignore[attr-defined]
    value = finding_value(REPORT, TYPED, "pleural_effusion", parsed, 0.9)
    assert (value.status, value.value, value.locations) == (
        FindingStatus.PRESENT,
        "stable",
        ("right_lung",),
    )
    answer["pleural_effusion"]["status"] = "absent"
    parsed = model.model_validate(answer).pleural_effusion  # type: ignore[attr-defined]
    absent = finding_value(REPORT, TYPED, "pleural_effusion", parsed, 0.9)
    assert absent.status is FindingStatus.ABSENT and absent.value is None


def test_a_typed_answer_for_a_presence_variable_is_an_error() -> None:
    with pytest.raises(ExtractionError):
        _typed("pleural_effusion", "effusion", 1)
    with pytest.raises(ExtractionError):
        finding_value(
            REPORT,
            TYPED,
            "fazekas",
            VariableAnswer(evidence=None, status=FindingStatus.NOT_MENTIONED, locations=None),
            None,
        )


# --- confidence ----------------------------------------------------------------------------


def test_confidence_of_typed_values_is_their_first_free_token() -> None:
    generation = fake_generation(
        [
            ('{"fazekas":{"evidence":"', 0.0, True),
            ("Fazekas 2", -3.0, False),  # inside the quote: must not count
            ('","value":', 0.0, True),
            ("2", -0.25, False),  # the digit tells 0-3 apart
            ('},"lvef":{"evidence":"', 0.0, True),
            ("LVEF", -1.0, False),
            (' 45","value":', -0.1, False),  # straddles the key: ends before the value starts
            ("4", -0.7, False),
            ("5", -0.05, False),
            ('},"heart_size":{"evidence":', 0.0, True),
            ("null", -0.2, False),  # the choice between quoting and null
            (',"value":null},"pleural_effusion":{"evidence":"x","status":"', 0.0, True),
            ("pres", -0.5, False),
            ('ent","locations":null,"episode":', 0.0, True),
            ("null", -0.9, False),
            ("}}", 0.0, True),
        ]
    )
    confidences = status_confidences(
        generation, ["fazekas", "lvef", "heart_size", "pleural_effusion"]
    )
    assert confidences == {
        "fazekas": round(math.exp(-0.25), 4),
        "lvef": round(math.exp(-0.7), 4),
        "heart_size": round(math.exp(-0.2), 4),
        "pleural_effusion": round(math.exp(-0.5), 4),
    }


def test_confidence_of_an_enum_string_value() -> None:
    generation = fake_generation(
        [
            ('{"heart_size":{"evidence":"', 0.0, True),
            ("cardiomegaly", -1.0, False),
            ('","value":"', 0.0, True),
            ("en", -0.3, False),
            ('larged"}}', 0.0, True),
        ]
    )
    assert status_confidences(generation, ["heart_size"]) == {
        "heart_size": round(math.exp(-0.3), 4)
    }


# --- hybrid merge --------------------------------------------------------------------------


def _stated(value: Any, stage: Stage, quote_at: int = 0) -> FindingValue:
    return FindingValue(
        variable_id="fazekas",
        status=FindingStatus.PRESENT,
        value=value,
        evidence=Evidence(quote="Fazekas grade 2", start=quote_at, end=quote_at + 15),
        confidence=0.9,
        stage=stage,
    )


def test_merge_typed_values_agree_on_the_same_value() -> None:
    agreed = merge_values(_stated(2, Stage.RULES), _stated(2, Stage.LLM))
    assert (agreed.value, agreed.stage, agreed.flags) == (2, Stage.HYBRID, ())
    close = merge_values(_stated(45.5, Stage.RULES), _stated(45.50000001, Stage.LLM))
    assert close.flags == ()
    disagree = merge_values(_stated(2, Stage.RULES), _stated(3, Stage.LLM))
    assert (disagree.value, disagree.flags, disagree.confidence) == (2, ("stages_disagree",), 0.45)
    silent_rules = FindingValue(
        variable_id="fazekas", status=FindingStatus.NOT_MENTIONED, stage=Stage.RULES
    )
    assert merge_values(silent_rules, _stated(3, Stage.LLM)).value == 3


def test_hints_show_typed_values() -> None:
    from workers.rules_stage import extract_rules

    hints = hints_text(extract_rules(REPORT, TYPED))
    assert "- fazekas: present = 2:" in hints
    assert "- lvef: present = 45.5 %:" in hints
    assert "- pleural_effusion: present = stable (right_lung):" in hints


# --- pipeline with a stand-in engine, then the real model -----------------------------------


def test_extract_typed_with_a_stand_in_engine_uses_the_template_cap() -> None:
    answer = _silent()
    answer["fazekas"] = {"evidence": "Fazekas grade 2", "value": 2}
    answer["lvef"] = {"evidence": "LVEF 45,5 %", "value": 45.5}
    engine = FakeEngine(answer)
    extraction = extract(REPORT, TYPED, engine, settings=Settings(max_tokens=300))
    assert engine.max_tokens == [900]
    fazekas = extraction.value_of("fazekas")
    lvef = extraction.value_of("lvef")
    assert fazekas is not None and fazekas.value == 2
    assert lvef is not None and (lvef.value, lvef.unit) == (45.5, "%")


@pytest.mark.llm
def test_real_model_fills_the_typed_template() -> None:
    from workers.engine_registry import get_engine

    settings = Settings(n_threads=2, n_ctx=4096, max_tokens=512)
    engine = get_engine(settings)
    extraction = extract(REPORT, TYPED, engine, settings=settings)
    assert [v.variable_id for v in extraction.values] == [v.id for v in TYPED.variables]
    for value in extraction.values:
        variable = TYPED.variable(value.variable_id)
        if value.status is FindingStatus.NOT_MENTIONED:
            assert value.value is None
            continue
        if variable.type.value == "ordinal" and value.value is not None:
            assert isinstance(value.value, int) and 0 <= value.value <= 3
        if variable.type.value == "number" and value.value is not None:
            assert isinstance(value.value, float) and 0 <= value.value <= 100
            assert value.unit == "%"
        if variable.type.value == "enum" and value.value is not None:
            assert value.value in {"enlarged", "normal_size"}
        assert value.confidence is not None and 0.0 <= value.confidence <= 1.0
    assert extraction.timings.completion_tokens > 0


@pytest.mark.llm
@pytest.mark.parametrize(
    ("variable", "replacement", "accepted"),
    [
        (None, None, True),
        ("fazekas", {"evidence": "Fazekas grade 4", "value": 4}, False),
        ("fazekas", {"evidence": "Fazekas grade 2", "value": 2.5}, False),
        ("lvef", {"evidence": "LVEF 100,5", "value": 100.5}, False),
        ("heart_size", {"evidence": "Mild cardiomegaly", "value": "huge"}, False),
        ("fazekas", {"evidence": None, "value": 2}, False),
        ("lvef", {"evidence": None, "value": None}, True),
    ],
)
def test_llguidance_grammar_holds_values_to_scale_range_and_options(
    variable: str | None, replacement: dict[str, Any] | None, accepted: bool
) -> None:
    """The compiled grammar (the one decoding uses) accepts exactly the valid typed answers."""
    import llguidance

    from workers.engine_registry import get_engine

    engine = get_engine(Settings(n_threads=2, n_ctx=4096, max_tokens=512))
    grammar = engine.grammar_for(output_json_schema(TYPED))
    answer: dict[str, Any] = {
        "fazekas": {"evidence": "Fazekas grade 2", "value": 2},
        "lvef": {"evidence": "LVEF 45,5 %", "value": 45.5},
        "heart_size": {"evidence": "Mild cardiomegaly", "value": "enlarged"},
        "pleural_effusion": {
            "evidence": "Small right pleural effusion",
            "status": "present",
            "locations": ["right_lung"],
            "episode": "stable",
        },
    }
    if variable is not None:
        answer[variable] = replacement
    text = json.dumps(answer, separators=(",", ":"))
    matcher = llguidance.LLMatcher(engine._tokenizer, grammar, log_level=0)
    tokens = engine.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    ok = matcher.consume_tokens(tokens) and not matcher.is_error() and matcher.is_accepting()
    assert ok is accepted
