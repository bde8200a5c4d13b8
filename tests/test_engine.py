"""The real llama.cpp engine with the default SmolLM2-135M GGUF (CPU): constrained decoding,
prefix reuse, the built-in grammar baseline, and the pipeline end to end.

Few reports on purpose: each costs seconds on 2 cores. Speeds are printed, not asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from adapter.settings import Settings
from mappings.report import FindingStatus, Report
from mappings.template import get_template
from mappings.template_output import output_json_schema, output_model
from workers import engine as engine_module
from workers.engine import Engine, default_model_path
from workers.engine_registry import get_engine
from workers.errors import EngineError, ExtractionError
from workers.llm_stage import extract
from workers.prompt import build_prompt, user_text

pytestmark = pytest.mark.llm

TEMPLATE = get_template("chest_findings")
SCHEMA = output_json_schema(TEMPLATE)
REPORTS = [
    "FINDINGS: Small right pleural effusion. No pneumothorax. Heart size is normal.",
    "FINDINGS: Patchy consolidation in the left lower lobe. Mild cardiomegaly.",
    "BEFUND: Kein Pleuraerguss. Kein Pneumothorax. Herz normal groß.",
]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(
        n_threads=2, n_ctx=8192, max_tokens=512
    )  # chest_findings 2.0: ~3,400-token prompt


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Engine:
    return get_engine(settings)


def _report(text: str, report_id: str = "t") -> Report:
    return Report(source_format="hl7v2", report_id=report_id, text=text)


def _prompt(engine: Engine, text: str) -> str:
    return build_prompt(TEMPLATE, _report(text), chat=engine)


def _valid(text: str) -> None:
    data = json.loads(text)
    jsonschema.validate(data, SCHEMA)
    output_model(TEMPLATE).model_validate(data)


def test_default_model_ships_in_the_wheel() -> None:
    path = default_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 10_000_000


def test_missing_or_broken_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not found"):
        Engine(Settings(model_path=tmp_path / "nothing.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file" * 100)
    with pytest.raises(EngineError, match=r"cannot load model junk\.gguf"):
        Engine(Settings(model_path=junk))


def test_engine_is_loaded_once_per_process(settings: Settings, engine: Engine) -> None:
    assert get_engine(settings) is engine
    info = engine.model_info
    assert info.name == default_model_path().stem and len(info.sha256) == 64
    assert engine.model_info is info  # hashed once


def test_engine_inherited_through_fork_is_not_reused(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pid = engine_module.os.getpid()
    monkeypatch.setattr(engine_module.os, "getpid", lambda: real_pid + 100_000)
    child = get_engine(settings)
    assert child is not engine and get_engine(settings) is child
    monkeypatch.undo()
    child.llm.close()
    engine_module._ENGINES.clear()
    engine_module._ENGINES.update({engine_module._engine_key(settings): engine})
    engine_module._ENGINES_PID[:] = [real_pid]
    engine_module._INHERITED.remove(engine)


def test_constrained_json_prefix_reuse_and_forced_tokens(engine: Engine) -> None:
    generations = [
        engine.generate_json(_prompt(engine, text), SCHEMA, max_tokens=512) for text in REPORTS
    ]
    for generation in generations:
        _valid(generation.text)
        assert 0 < generation.forced_tokens < generation.completion_tokens
        assert len(generation.steps) == generation.completion_tokens
        assert "".join(step.text for step in generation.steps) == generation.text
        print(
            f"\nllguidance: prompt {generation.prompt_tokens} (evaluated "
            f"{generation.prompt_tokens_evaluated}), output {generation.completion_tokens} "
            f"({generation.forced_tokens} forced) in {generation.seconds:.2f} s = "
            f"{generation.tokens_per_second:.1f} tok/s; model {generation.model_seconds:.2f} s, "
            f"constraint {generation.constraint_seconds:.3f} s"
        )
    # after the first report only the report part is evaluated: the template prefix is reused
    for text, generation in zip(REPORTS[1:], generations[1:], strict=True):
        report_tokens = len(engine.tokenize(user_text(_report(text))))
        assert generation.prompt_tokens_evaluated <= report_tokens + 10
        assert generation.prompt_tokens_evaluated < generation.prompt_tokens / 5


def test_builtin_grammar_baseline_is_valid_json(engine: Engine) -> None:
    generation = engine.generate_builtin_grammar(
        _prompt(engine, REPORTS[0]), SCHEMA, max_tokens=768
    )
    _valid(generation.text)
    print(
        f"\nbuilt-in grammar: output {generation.completion_tokens} in {generation.seconds:.2f} s "
        f"= {generation.tokens_per_second:.1f} tok/s"
    )


def test_schema_llguidance_rejects_fails_loudly(engine: Engine) -> None:
    with pytest.raises(EngineError, match="llguidance rejected"):
        engine.grammar_for({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})


def test_too_few_tokens_or_too_little_context_is_an_error_not_partial_output(
    engine: Engine,
) -> None:
    with pytest.raises(ExtractionError, match="incomplete after 20 tokens"):
        engine.generate_json(_prompt(engine, REPORTS[0]), SCHEMA, max_tokens=20)
    with pytest.raises(ExtractionError, match="exceeds n_ctx"):
        engine.generate_json(_prompt(engine, REPORTS[0]), SCHEMA, max_tokens=8000)


def test_pipeline_end_to_end_with_varying_confidence(engine: Engine, settings: Settings) -> None:
    extraction = extract(_report(REPORTS[0], "e2e"), TEMPLATE, engine, settings=settings)
    assert [v.variable_id for v in extraction.values] == [v.id for v in TEMPLATE.variables]
    assert extraction.model.sha256 == engine.model_info.sha256
    assert extraction.timings.completion_tokens > extraction.timings.forced_tokens > 0
    for value in extraction.values:
        if value.status is not FindingStatus.NOT_MENTIONED:
            # every kept value either has a verified quote or says why it was downgraded
            assert (value.evidence is not None and value.evidence.verified) or value.flags
    confidences = {v.confidence for v in extraction.values if v.confidence is not None}
    assert len(confidences) >= 2  # confidence follows the model's probabilities
    print("\n" + ", ".join(f"{v.variable_id}={v.status}:{v.confidence}" for v in extraction.values))


def test_gemma_files_without_a_chat_template_get_llama_cpp_builtin_gemma_format() -> None:
    """A Gemma GGUF without `tokenizer.chat_template` must not get ChatML (plain text to it)."""
    from workers.errors import EngineError

    formatted = engine_module._apply_builtin_template("gemma", [("system", "S"), ("user", "U")])
    assert formatted == "<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n"
    with pytest.raises(EngineError):
        engine_module._apply_builtin_template("no-such-template", [("user", "U")])
