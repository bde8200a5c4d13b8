"""The real llama.cpp engine with the default SmolLM2-135M GGUF (CPU): constrained decoding,
prefix reuse, the built-in grammar baseline and the pipeline end to end."""

from __future__ import annotations

import json

import pytest

from adapter.settings import Settings
from mappings.report import FindingStatus, Report
from mappings.template import get_template, output_json_schema, output_model
from workers.engine import Engine, default_model_path, get_engine
from workers.errors import EngineError
from workers.pipeline import extract
from workers.prompt import build_prompt, system_text

pytestmark = pytest.mark.llm

REPORTS = [
    "FINDINGS: Small right pleural effusion. No pneumothorax. Heart size is normal.",
    "FINDINGS: Patchy consolidation in the left lower lobe. Mild cardiomegaly.",
]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(n_threads=2, n_ctx=4096, max_tokens=512)


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Engine:
    return get_engine(settings)


def _report(text: str, report_id: str = "t") -> Report:
    return Report(source_format="hl7v2", report_id=report_id, text=text)


def test_default_model_ships_in_the_wheel() -> None:
    path = default_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000


def test_missing_model_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(EngineError, match="not found"):
        Engine(Settings(model_path="/nonexistent/model.gguf"))  # type: ignore[arg-type]


def test_engine_is_loaded_once(settings: Settings, engine: Engine) -> None:
    assert get_engine(settings) is engine
    assert len(engine.model_info.sha256) == 64


def test_constrained_json_prefix_reuse_and_forced_tokens(engine: Engine) -> None:
    template = get_template("chest_findings")
    schema = output_json_schema(template)
    first = engine.generate_json(
        build_prompt(engine, template, _report(REPORTS[0])), schema, max_tokens=512
    )
    second = engine.generate_json(
        build_prompt(engine, template, _report(REPORTS[1])), schema, max_tokens=512
    )
    for generation in (first, second):
        output_model(template).model_validate(json.loads(generation.text))
        assert generation.forced_tokens > 0
        assert generation.forced_tokens < generation.completion_tokens
    # the template prefix is reused: only the report part is evaluated the second time
    prefix_tokens = len(engine.llm.tokenize(system_text(template).encode(), add_bos=True))
    assert second.prompt_tokens_evaluated < second.prompt_tokens - prefix_tokens + 40
    print(
        f"\nllguidance: {second.completion_tokens} tokens in {second.seconds:.2f} s ({second.tokens_per_second:.1f} tok/s)"
    )


def test_builtin_grammar_baseline_is_valid_json(engine: Engine) -> None:
    template = get_template("chest_findings")
    schema = output_json_schema(template)
    generation = engine.generate_builtin_grammar(
        build_prompt(engine, template, _report(REPORTS[0])), schema, max_tokens=512
    )
    output_model(template).model_validate(json.loads(generation.text))
    print(
        f"\nbuilt-in grammar: {generation.completion_tokens} tokens in {generation.seconds:.2f} s"
    )


def test_grammar_rejection_fails_loudly(engine: Engine) -> None:
    with pytest.raises(EngineError):
        engine.grammar_for({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})


def test_pipeline_end_to_end_with_varying_confidence(engine: Engine, settings: Settings) -> None:
    template = get_template("chest_findings")
    extraction = extract(_report(REPORTS[0], "e2e"), template, engine, settings=settings)
    assert [v.variable_id for v in extraction.values] == [v.id for v in template.variables]
    assert extraction.model.sha256 == engine.model_info.sha256
    assert extraction.timings.completion_tokens > 0
    for value in extraction.values:
        if value.status is not FindingStatus.NOT_MENTIONED:
            # every kept value either has a verified quote or says why it was downgraded
            assert (value.evidence is not None and value.evidence.verified) or value.flags
    confidences = {v.confidence for v in extraction.values if v.confidence is not None}
    assert len(confidences) >= 2  # confidence follows the model's probabilities
