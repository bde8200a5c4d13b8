"""The brain_mri_memory template: its variables, scores and wording, stage-1 accuracy, one
real-model run (the checks every built-in template passes: tests/test_builtin_templates.py).

The labelled set (tests/fixtures/labelled/brain_mri_memory.jsonl) was written by hand before the
template's synonyms and patterns; the floors below sit slightly under what stage 1 measured.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from mappings.report import FindingStatus, PatientIdentifier
from mappings.routing import applies
from mappings.template import Template, VariableType, load_template
from tests.labelled import (
    as_report,
    bundle_observations,
    class_accuracies,
    coded_observations,
    print_accuracies,
    read_rows,
    rule_extractions,
    rule_values,
    template_codes,
    template_path,
)
from workers.rules_stage import extract_rules

TEMPLATE_ID = "brain_mri_memory"
# Per-variable class-accuracy floors and the overall floor on the TEST half of the labelled set
# (58 reports, split by sha256(id) parity; tests/fixtures/labelled/README.md): what stage 1
# measured after issue 11 minus about 0.05. The misses are free wording of presence findings
# (hippocampi "matig atrofisch", "ventrikelsysteem matig verwijd"), typos, lobar/deep microbleeds
# named by their location only, and conclusions without a category word; the model stage is
# there for them.
FLOORS: dict[str, float] = {
    "gca": 0.95, "mta_left": 0.88, "mta_right": 0.9, "fazekas": 0.95, "koedam": 0.95,
    "global_atrophy": 0.85, "frontal_atrophy": 0.88, "temporal_atrophy": 0.88,
    "parietal_atrophy": 0.8, "hippocampal_atrophy": 0.75, "ventricular_enlargement": 0.75,
    "white_matter_lesions": 0.7, "small_vessel_disease": 0.88, "perivascular_spaces": 0.9,
    "microbleeds": 0.68, "microbleed_count": 0.85, "microbleeds_lobar": 0.75,
    "microbleeds_deep": 0.78, "lacunes": 0.85, "lacune_count": 0.9, "cortical_infarcts": 0.9,
    "subcortical_infarcts": 0.9, "strategic_infarct": 0.9, "superficial_siderosis": 0.95,
    "intracerebral_haemorrhage": 0.9, "nph_features": 0.95, "meningioma": 0.9, "aneurysm": 0.95,
    "arachnoid_cyst": 0.95, "conclusion": 0.7,
}  # fmt: skip
OVERALL_FLOOR = 0.89
# The model answer for the longest labelled report is about 850 tokens (20 findings with short
# quotes); the template's max_tokens leaves that room inside the default 8192-token context
# (RADBRIDGE_N_CTX; the long narrative Dutch reports of 2026-12-03 need more than 4096).
N_CTX = 8192  # the default RADBRIDGE_N_CTX; the long narrative reports need more than 4096


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(template_path(TEMPLATE_ID))


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return read_rows(TEMPLATE_ID)


def test_template_loads_with_verified_codes(template: Template) -> None:
    assert template.languages == ("nl", "en")
    assert len(template.variables) == 30
    kinds = {v.id: v.type for v in template.variables}
    ordinal = {"gca": 3, "mta_left": 4, "mta_right": 4, "fazekas": 3, "koedam": 3}
    for variable_id, top in ordinal.items():
        assert kinds[variable_id] is VariableType.ORDINAL
        scale = template.variable(variable_id).scale
        assert scale is not None and (scale.min, scale.max) == (0, top)
    for count in ("microbleed_count", "lacune_count"):
        unit = template.variable(count).unit
        assert unit is not None and unit.code == "1"  # UCUM unity, as the FHIR Count type
    assert {o.id for o in template.variable("conclusion").options} == {
        "normal", "alzheimer", "frontotemporal", "vascular", "mixed", "other",
    }  # fmt: skip
    assert len(template_codes(template)) == 10  # verified in tests/test_builtin_templates.py
    assert template.variable("lacunes").code is not None
    assert template.variable("lacunes").code.code == "230698000"  # type: ignore[union-attr]


def test_prompt_definitions_stay_compact(template: Template) -> None:
    from workers.prompt import system_text

    # 6,700 characters measured ~2,090 SmolLM2 tokens; the model test checks the real budget.
    assert len(system_text(template)) < 6900
    assert template.max_tokens is not None and template.max_tokens >= 900


def test_labelled_set_languages_and_empty_reports(rows: list[dict[str, Any]]) -> None:
    assert {row["language"] for row in rows} == {"nl", "en", "de"}
    assert len([r for r in rows if r["language"] == "nl"]) >= 45
    empty = [r["id"] for r in rows if set(r["gold"].values()) == {"not_mentioned"}]
    assert len(empty) == 3


def test_labelled_reports_do_not_route_to_oncology(rows: list[dict[str, Any]]) -> None:
    """With MR or no modality (that they route here: tests/test_builtin_templates.py); a report
    with nothing to extract may also go to the oncology template (content cannot choose)."""
    oncology = load_template(template_path("brain_mri_oncology"))
    for row in rows:
        if set(row["gold"].values()) == {"not_mentioned"}:
            continue
        for modality in ("MR", None):
            assert not applies(oncology, as_report(row, modality)), (row["id"], modality)


def test_stage1_accuracy_on_the_test_half(template: Template, rows: list[dict[str, Any]]) -> None:
    rows = [row for row in rows if row["split"] == "test"]
    per_variable, overall = class_accuracies(template, rows, rule_extractions(template, rows))
    print_accuracies(per_variable, overall, 26)
    assert set(FLOORS) == set(per_variable)
    for variable_id, floor in FLOORS.items():
        assert per_variable[variable_id] >= floor, variable_id
    assert overall >= OVERALL_FLOOR


@pytest.mark.parametrize(
    ("text", "left", "right"),
    [
        ("MTA-score links 3, rechts 2.", 3, 2),
        ("MTA rechts 4, links 1.", 1, 4),
        ("MTA 2 links, 1 rechts.", 2, 1),
        ("MTA 1 beiderzijds.", 1, 1),
        ("MTA-score L 2 / R 3.", 2, 3),
        ("MTA score 2 on the left and 4 on the right.", 2, 4),
        ("MTA 3 bilaterally.", 3, 3),
        ("MTA (L/R): 3/2.", 3, 2),
        ("MTA R/L 1/2.", 2, 1),
        ("MTA L2 R3, GCA 1.", 2, 3),
        ("Bilateraal MTA 3, GCA 2.", 3, 3),
        ("MTA: 1 (rechts), 2 (links).", 2, 1),
        ("Mediotemporale atrofie volgens Scheltens: rechts 1, links 2.", 2, 1),
        ("MTA rechts 3 (was 2), links 3 (was 2).", 3, 3),
        ("MTA links twee, rechts één.", 2, 1),
        ("MTA li 3, re 2.", 3, 2),
        ("MTA 2.", 2, 2),
        ("Medial temporal atrophy: MTA 1 on the right, 2 on the left.", 2, 1),
    ],
)
def test_mta_sides(template: Template, text: str, left: int, right: int) -> None:
    values = rule_values(template, f"MRI hersenen, geheugenpoli\nBevindingen: {text}", "nl")
    assert values["mta_left"].value == left
    assert values["mta_right"].value == right


def test_scores_counts_and_negations(template: Template) -> None:
    text = (
        "MRI hersenen, dementieprotocol\n"
        "Bevindingen: GCA 2 (was 1). Fazekas graad 2 met confluerende witte stofafwijkingen. "
        "Koedam-score 1. SWI: 6 lobaire microbloedingen, geen diepe microbloedingen. "
        "Lacunes: 2. Geen meningeoom. Mogelijk klein aneurysma.\n"
        "Conclusie: Gemengd beeld van neurodegeneratie en small vessel disease."
    )
    values = rule_values(template, text, "nl")
    assert values["gca"].value == 2
    assert values["fazekas"].value == 2
    assert values["koedam"].value == 1
    assert values["microbleed_count"].value == pytest.approx(6)
    assert values["microbleed_count"].unit == "1"
    assert values["lacune_count"].value == pytest.approx(2)
    assert values["white_matter_lesions"].status is FindingStatus.PRESENT
    assert values["microbleeds_lobar"].status is FindingStatus.PRESENT
    assert values["microbleeds_deep"].status is FindingStatus.ABSENT
    assert values["meningioma"].status is FindingStatus.ABSENT
    assert values["aneurysm"].status is FindingStatus.UNCERTAIN
    assert values["conclusion"].value == "mixed"
    assert values["mta_left"].status is FindingStatus.NOT_MENTIONED
    assert values["nph_features"].status is FindingStatus.NOT_MENTIONED


@pytest.mark.llm
def test_hybrid_extraction_with_the_default_model_gives_a_valid_coded_bundle(
    template: Template, rows: list[dict[str, Any]]
) -> None:
    from adapter.settings import Settings
    from conformance.validate import validate_resource
    from mappings.fhir_out import build_bundle
    from workers.engine_registry import get_engine
    from workers.prompt import system_text, user_text
    from workers.rules_stage import variable_spans
    from workers.stages import hints_text, run_stage

    settings = Settings(stage="hybrid")
    engine = get_engine(settings)
    assert settings.n_ctx >= N_CTX and template.max_tokens is not None
    for row in rows:  # every labelled report fits the context with its stage-1 hints
        report = as_report(row)
        hints = hints_text(extract_rules(report, template)) or None
        prompt = engine.chat_prompt(system_text(template), user_text(report, hints))
        assert len(engine.tokenize(prompt)) + template.max_tokens <= N_CTX, row["id"]
        assert variable_spans(report, template)

    row = next(r for r in rows if r["id"] == "bmm-mix-02")  # short; aneurysm, atrophy coded
    report = as_report(row).model_copy(
        update={
            "sending_facility": "MEMCLIN",
            "accession_number": "ACC-BMM-MIX-02",
            "patient_identifiers": (PatientIdentifier(value="MRN-BMM-02", assigner="MEMCLIN"),),
            "observation_time": datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
        }
    )
    extraction = run_stage(report, template, settings, lambda: engine)
    values = {v.variable_id: v for v in extraction.values}
    assert values["aneurysm"].status is FindingStatus.PRESENT
    bundle = build_bundle(report, extraction, template)
    assert validate_resource(bundle) == []
    observations = bundle_observations(bundle)
    coded = coded_observations(bundle)
    assert coded, "no coded Observation"
    aneurysm = next(o for o in coded if o["code"]["coding"][0]["code"] == "128609009")
    assert aneurysm["valueCodeableConcept"]["coding"][0]["code"] == "52101004"  # Present
    scores = [o for o in observations if "valueInteger" in o]
    assert scores, "no ordinal score Observation"


def test_mta_sides_in_a_table(template: Template) -> None:
    text = "MRI hersenen\nVisuele scores      li   re\nMTA                  2    3\nGCA                  1\n"
    values = rule_values(template, text, "nl")
    assert (values["mta_left"].value, values["mta_right"].value) == (2, 3)
    assert values["gca"].value == 1


@pytest.mark.parametrize(
    ("text", "variable", "value"),
    [
        ("Geen globale atrofie (GCA 0).", "gca", 0),
        ("Geen witte stofafwijkingen, Fazekas 0.", "fazekas", 0),
        ("Geen posterieure atrofie (Koedam 0).", "koedam", 0),
        ("No white matter lesions (Fazekas 0).", "fazekas", 0),
        ("Geen mediotemporale atrofie, MTA 0 beiderzijds.", "mta_left", 0),
    ],
)
def test_negated_statement_keeps_its_score(
    template: Template, text: str, variable: str, value: int
) -> None:
    values = rule_values(template, f"MRI hersenen\nBevindingen: {text}", "nl")
    assert values[variable].value == value


@pytest.mark.parametrize(
    ("text", "language", "count"),
    [
        ("Er zijn ongeveer twaalf microbloedingen, lobair.", "nl", 12),
        ("SWI: circa acht microbloedingen.", "nl", 8),
        ("In totaal ongeveer veertien microbloedingen.", "nl", 14),
        ("Approximately twenty lobar microbleeds.", "en", 20),
        ("About 3 microbleeds in the basal ganglia.", "en", 3),
        ("Microbloedingen: 4.", "nl", 4),
    ],
)
def test_counts_as_words_and_approximations(
    template: Template, text: str, language: str, count: int
) -> None:
    values = rule_values(template, f"MRI hersenen\n{text}", language)
    assert values["microbleed_count"].value == count
    assert values["microbleeds"].status is FindingStatus.PRESENT


def test_bounds_and_prior_lines_are_no_counts(template: Template) -> None:
    text = "MRI hersenen\nKoedam: 2\nMicrobloedingen: geen\nLacunes: meerdere (>5).\n"
    values = rule_values(template, text, "nl")
    assert values["microbleed_count"].status is FindingStatus.NOT_MENTIONED
    assert values["microbleeds"].status is FindingStatus.ABSENT
    assert values["lacune_count"].status is FindingStatus.NOT_MENTIONED
    assert values["lacunes"].status is FindingStatus.PRESENT


@pytest.mark.parametrize(
    ("text", "language", "variable"),
    [
        ("Mogelijk een klein meningeoom frontaal.", "nl", "meningioma"),
        ("Waarschijnlijk een kleine lacune in de corona radiata.", "nl", "lacunes"),
        ("Beeld verdacht voor normaldrukhydrocefalus.", "nl", "nph_features"),
        ("Een klein aneurysma is niet uit te sluiten.", "nl", "aneurysm"),
        ("Possible small meningioma along the falx.", "en", "meningioma"),
        ("A small aneurysm cannot be excluded.", "en", "aneurysm"),
    ],
)
def test_hedged_findings_are_uncertain(
    template: Template, text: str, language: str, variable: str
) -> None:
    values = rule_values(template, f"MRI hersenen\nBevindingen: {text}", language)
    assert values[variable].status is FindingStatus.UNCERTAIN


@pytest.mark.parametrize(
    "text",
    [
        "MTA 7 links, rechts 9. Fazekas 4. GCA 5.",
        "Rapport volgt. Patiënt niet gescand.",
        "Ceci n'est pas un compte rendu: IRM cérébrale normale.",
        "CT thorax: geen noduli. MRI hersenen: geen bijzonderheden.",
    ],
)
def test_bad_input_gives_no_invented_scores(template: Template, text: str) -> None:
    values = rule_values(template, f"MRI hersenen\n{text}", "nl")
    for variable in ("mta_left", "mta_right", "fazekas", "gca", "koedam"):
        assert values[variable].status is FindingStatus.NOT_MENTIONED, variable
