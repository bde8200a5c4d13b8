"""mappings/template.py and template_output.py: loading, meaning checks, output schema,
llguidance acceptance."""

from __future__ import annotations

from pathlib import Path

import pytest

from mappings.errors import TemplateError
from mappings.template import (
    VariableType,
    get_template,
    load_builtin_templates,
    load_template,
    parse_template,
)
from mappings.template_output import output_json_schema, output_model, prompt_definitions

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
        ("type: presence", "type: sometimes", "variables.pleural_effusion.type", "Input should be"),
        (
            'code: "60046008"',
            'code: "99999999"',
            "variables.pleural_effusion.code",
            "not in the SNOMED CT Global Patient Set",
        ),
        ('code: "8186001"', 'code: "416940007"', "variables.cardiomegaly.code", "do-not-use"),
        (
            "locations: [right_lung, left_lung, bilateral]",
            "locations: [right_lung, nowhere]",
            "variables.pleural_effusion.locations",
            "undeclared",
        ),
        (
            "  - id: pneumothorax",
            "  - id: pleural_effusion",
            "variables.pleural_effusion.id",
            "duplicate",
        ),
        (
            "nl: [pleuravocht, pleura-effusie, pleuravochtcollectie], ",
            "",
            "variables.pleural_effusion.synonyms.nl",
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


TYPED = Path(__file__).resolve().parent / "fixtures" / "templates" / "typed_demo.yaml"


def _typed(replace: str = "", by: str = "") -> str:
    text = TYPED.read_text("utf-8")
    if replace:
        assert replace in text, replace
        text = text.replace(replace, by, 1)
    return text


def test_typed_template_loads_every_type() -> None:
    template = load_template(TYPED)
    assert template.max_tokens == 900
    fazekas = template.variable("fazekas")
    assert fazekas.type is VariableType.ORDINAL
    assert (fazekas.scale.min, fazekas.scale.max) == (0, 3)  # type: ignore[union-attr]
    assert fazekas.section == "impression"
    assert "nl" in fazekas.patterns
    lvef = template.variable("lvef")
    assert lvef.type is VariableType.NUMBER
    assert lvef.unit is not None and lvef.unit.code == "%"
    assert lvef.range is not None and lvef.range.max == 100
    heart = template.variable("heart_size")
    assert heart.type is VariableType.ENUM
    assert [o.id for o in heart.options] == ["enlarged", "normal_size"]
    assert heart.option("enlarged").code is not None
    assert heart.option("normal_size").code is None
    effusion = template.variable("pleural_effusion")
    assert effusion.qualifier is not None
    assert effusion.qualifier.id == "episode"
    assert effusion.qualifier.option("stable").label == "Stable"


NUMBER_BLOCK = 'unit: {code: "%", display: "%"}\n    range: {min: 0, max: 100}'


@pytest.mark.parametrize(
    ("old", "new", "field", "problem"),
    [
        # ordinal
        ("scale: {min: 0, max: 3}", "scale: {min: 3, max: 3}", "variables.fazekas.scale", "below"),
        (
            "    scale: {min: 0, max: 3}\n",
            "",
            "variables.fazekas.scale",
            "type ordinal needs scale",
        ),
        ("scale: {min: 0, max: 3}", "scale: {min: 0, max: 3, step: 1}", "scale.step", "Extra"),
        ("scale: {min: 0, max: 3}", "scale: {min: 0, max: two}", "scale.max", "integer"),
        (
            "    section: impression",
            "    section: impression\n    unit: {code: x, display: x}",
            "variables.fazekas.unit",
            "not allowed for type ordinal",
        ),
        (
            "section: impression",
            "section: somewhere",
            "variables.fazekas.section",
            "unknown section",
        ),
        # patterns
        (
            r"en: ['fazekas\s*(?:grade|score)?\s*:?\s*(?P<value>[0-3])\b']",
            r"en: ['fazekas\s*(?P<grade>[0-3])']",
            "variables.fazekas.patterns.en[0]",
            "named group",
        ),
        (
            r"en: ['fazekas\s*(?:grade|score)?\s*:?\s*(?P<value>[0-3])\b']",
            r"en: ['fazekas (?P<value>[0-3']",
            "variables.fazekas.patterns.en[0]",
            "invalid regular expression",
        ),
        (
            r"en: ['fazekas\s*(?:grade|score)?\s*:?\s*(?P<value>[0-3])\b']",
            r"fr: ['fazekas (?P<value>[0-3])']",
            "variables.fazekas.patterns.fr",
            "undeclared language",
        ),
        # number
        (
            '    unit: {code: "%", display: "%"}\n',
            "",
            "variables.lvef.unit",
            "type number needs unit",
        ),
        ('unit: {code: "%", display: "%"}', 'unit: {code: "m l", display: "mL"}', "unit.code", ""),
        ("range: {min: 0, max: 100}", "range: {min: 100, max: 0}", "variables.lvef.range", "below"),
        (
            NUMBER_BLOCK,
            NUMBER_BLOCK + "\n    scale: {min: 0, max: 3}",
            "variables.lvef.scale",
            "not allowed for type number",
        ),
        # enum
        (
            "      - id: normal_size",
            "      - id: enlarged",
            "variables.heart_size.options.enlarged.id",
            "duplicate option",
        ),
        (
            "      - id: normal_size",
            "      - id: not_mentioned",
            "options.not_mentioned.id",
            "reserved",
        ),
        (
            '        uncoded_reason: "test template: no verified code for a normal heart size"\n',
            "",
            "variables.heart_size.options.normal_size.uncoded_reason",
            "uncoded option must say why",
        ),
        (
            'code: "8186001", display: "Cardiomegaly (disorder)"',
            'code: "99999999", display: "Cardiomegaly (disorder)"',
            "variables.heart_size.options.enlarged.code",
            "not in the SNOMED CT Global Patient Set",
        ),
        (
            'code: "8186001", display: "Cardiomegaly (disorder)"',
            'code: "128404006", display: "Cardiomegaly (disorder)"',
            "variables.heart_size.options.enlarged.code",
            "do-not-use",
        ),
        (
            "nl: [cardiomegalie, vergroot hart]",
            "de: [Kardiomegalie]",
            "variables.heart_size.options.enlarged.synonyms.nl",
            "no synonyms",
        ),
        (
            "    type: enum",
            "    type: ordinal",
            "variables.heart_size.options",
            "not allowed for type ordinal",
        ),
        # presence qualifier
        (
            "      id: episode",
            "      id: status",
            "variables.pleural_effusion.qualifier.id",
            "reserved",
        ),
        (
            '      uncoded_reason: "test template: episode qualifiers are not coded yet"\n',
            "",
            "variables.pleural_effusion.qualifier.uncoded_reason",
            "uncoded qualifier",
        ),
        (
            "        - id: stable",
            "        - id: progression",
            "variables.pleural_effusion.qualifier.options.progression.id",
            "duplicate option",
        ),
        (
            "nl: [stabiel, onveranderd]",
            "de: [stabil]",
            "variables.pleural_effusion.qualifier.options.stable.synonyms.nl",
            "no synonyms",
        ),
        (
            "    type: presence",
            "    type: number",
            "variables.pleural_effusion.qualifier",
            "not allowed",
        ),
        # template level
        ("max_tokens: 900", "max_tokens: 0", "max_tokens", "greater than or equal"),
    ],
)
def test_typed_errors_name_file_and_field(old: str, new: str, field: str, problem: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(_typed(old, new), "typed.yaml")
    assert str(caught.value).startswith("typed.yaml: ")
    found = getattr(caught.value, "problems", (caught.value,))
    assert any(field in p.field and problem in p.problem for p in found), caught.value


def test_empty_options_and_qualifier_options_are_refused() -> None:
    start = _typed().index("    options:\n")
    end = _typed().index("  - id: pleural_effusion")
    text = _typed()[:start] + "    options: []\n" + _typed()[end:]
    with pytest.raises(TemplateError) as caught:
        parse_template(text, "typed.yaml")
    assert caught.value.field == "variables.heart_size.options"
    start = text.index("      options:\n")
    text = text[:start] + "      options: []\n"
    with pytest.raises(TemplateError) as caught:
        parse_template(text, "typed.yaml")
    assert caught.value.field.startswith("variables.pleural_effusion.qualifier.options")


def test_enum_needs_no_own_synonyms_but_ordinal_does() -> None:
    template = load_template(TYPED)
    assert template.variable("heart_size").synonyms == {}
    with pytest.raises(TemplateError) as caught:
        parse_template(_typed("nl: [Fazekas, witte stof afwijkingen]", ""), "typed.yaml")
    assert caught.value.field == "variables.fazekas.synonyms.nl"


def test_load_template_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as caught:
        load_template(tmp_path / "missing.yaml")
    assert caught.value.field == "(file)"
