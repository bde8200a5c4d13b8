"""mappings/template.py: loading, meaning checks, output schema, llguidance acceptance."""

from __future__ import annotations

from pathlib import Path

import pytest

from mappings.errors import TemplateError
from mappings.template import (
    get_template,
    load_builtin_templates,
    output_json_schema,
    output_model,
    parse_template,
    prompt_definitions,
)

CHEST = Path(__file__).resolve().parents[1] / "mappings" / "templates" / "chest_findings.yaml"


def test_chest_template_loads() -> None:
    template = get_template("chest_findings")
    ids = {v.id for v in template.variables}
    assert {
        "pleural_effusion", "pneumothorax", "consolidation", "atelectasis",
        "lung_nodule", "cardiomegaly", "pulmonary_oedema", "ground_glass_opacity",
    } <= ids  # fmt: skip
    assert [s.id for s in template.sites("both_lower_lobes")] == [
        "right_lower_lobe",
        "left_lower_lobe",
    ]
    assert "chest_findings" in load_builtin_templates()


def _broken(replace: str, by: str) -> str:
    text = CHEST.read_text("utf-8")
    assert replace in text
    return text.replace(replace, by, 1)


@pytest.mark.parametrize(
    ("old", "new", "field", "problem"),
    [
        ("type: presence", "type: sometimes", "variables[0].type", "Input should be"),
        (
            'code: "60046008"',
            'code: "99999999"',
            "variables[0].code",
            "not in mappings/terminology.py",
        ),
        ('code: "8186001"', 'code: "416940007"', "variables[5].code", "do-not-use"),
        (
            "locations: [right_lung, left_lung, bilateral]",
            "locations: [right_lung, nowhere]",
            "variables[0].locations[1]",
            "undeclared",
        ),
        ("  - id: pneumothorax", "  - id: pleural_effusion", "variables[1].id", "duplicate"),
        (
            "nl: [pleuravocht, pleura-effusie, pleuravochtcollectie], ",
            "",
            "variables[0].synonyms.nl",
            "no synonyms",
        ),
        ("id: chest_findings", "id: chest_findings\nsurprise: 1", "surprise", "Extra inputs"),
        ("title: Chest imaging findings", "title: [unclosed", "line", "invalid YAML"),
    ],
)
def test_malformed_templates_name_file_and_field(
    old: str, new: str, field: str, problem: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(_broken(old, new), "broken.yaml")
    message = str(caught.value)
    assert message.startswith("broken.yaml: ")
    assert field in caught.value.field
    assert problem in message


def test_uncoded_variable_must_say_why() -> None:
    text = _broken("    uncoded_reason:", "    uncoded_note:")
    with pytest.raises(TemplateError):
        parse_template(text, "broken.yaml")


def test_output_schema_order_required_and_bounded() -> None:
    template = get_template("chest_findings")
    schema = output_json_schema(template)
    assert schema["required"] == [v.id for v in template.variables]
    assert schema["additionalProperties"] is False
    mentioned, not_mentioned = schema["properties"]["pleural_effusion"]["anyOf"]
    for shape in (mentioned, not_mentioned):
        assert list(shape["properties"]) == ["evidence", "status", "locations"]  # quote first
        assert shape["required"] == ["evidence", "status", "locations"]
        assert shape["additionalProperties"] is False
    assert mentioned["properties"]["evidence"]["maxLength"] > 0
    assert "not_mentioned" not in mentioned["properties"]["status"]["enum"]
    assert not_mentioned["properties"]["evidence"] == {"type": "null"}
    assert not_mentioned["properties"]["status"] == {"const": "not_mentioned"}
    cardiomegaly = schema["properties"]["cardiomegaly"]["anyOf"][0]
    assert cardiomegaly["properties"]["locations"] == {"type": "null"}


def test_schema_rejects_a_verdict_without_a_quote() -> None:
    import jsonschema

    template = get_template("chest_findings")
    answer = {
        v.id: {"evidence": None, "status": "not_mentioned", "locations": None}
        for v in template.variables
    }
    jsonschema.validate(answer, output_json_schema(template))
    answer["pneumothorax"] = {"evidence": None, "status": "present", "locations": None}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(answer, output_json_schema(template))


def test_schema_compiles_with_llguidance() -> None:
    import llguidance

    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        output_json_schema(get_template("chest_findings"))
    )
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    assert not is_error, messages


def test_output_model_validates_sample() -> None:
    template = get_template("chest_findings")
    model = output_model(template)
    answer = {
        v.id: {"evidence": None, "status": "not_mentioned", "locations": None}
        for v in template.variables
    }
    answer["pleural_effusion"] = {
        "evidence": "small right effusion",
        "status": "present",
        "locations": ["right_lung"],
    }
    parsed = model.model_validate(answer)
    assert parsed.pleural_effusion.status.value == "present"  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        model.model_validate({**answer, "extra": {}})


def test_prompt_definitions_are_stable() -> None:
    template = get_template("chest_findings")
    assert prompt_definitions(template) == prompt_definitions(template)
    assert "pleural_effusion" in prompt_definitions(template)
