"""The engine registry (issue 22 item 4): one entry per engine holds every decision that depends
on it (load, worker pool, probe, concurrency, what a backfill records), so a new backend is one
class and nothing else branches on the engine kind."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from adapter.settings import Settings
from app.backfill import backfill_options
from mappings.template import get_template
from tests.fakes import FakeEngine
from workers.engine_registry import (
    MODEL_ENGINES,
    RULES_ONLY,
    EngineEntry,
    Pool,
    cpu_cores,
    entry_for,
    get_engine,
    model_engine,
    probe_engine,
    worker_pool,
)
from workers.errors import EngineError
from workers.extraction_engine import ExtractionEngine

ROOT = Path(__file__).resolve().parents[1]


def test_every_engine_setting_has_an_entry() -> None:
    kinds = set(typing.get_args(Settings.model_fields["engine"].annotation))
    assert kinds == set(MODEL_ENGINES)
    for kind in kinds:
        assert model_engine(Settings(engine=kind)).kind == kind


@pytest.mark.parametrize("engine", ["llamacpp", "openai"])
def test_the_rules_stage_is_its_own_entry_whatever_the_engine(engine: str) -> None:
    settings = Settings(stage="rules", engine=engine)
    assert entry_for(settings) is RULES_ONLY
    cores = cpu_cores()
    assert worker_pool(settings) == ("prefork" if cores > 1 else "solo", cores)
    assert RULES_ONLY.concurrency(settings) == 1
    assert "engine" not in backfill_options({}, False, settings)
    with pytest.raises(EngineError):
        RULES_ONLY.load(settings)


def test_model_stages_take_the_configured_engine() -> None:
    llamacpp = Settings(stage="hybrid")
    openai = Settings(stage="llm", engine="openai", llm_concurrency=5, llm_model="m")
    assert entry_for(llamacpp).kind == "llamacpp" and entry_for(openai).kind == "openai"
    assert worker_pool(llamacpp) == ("solo", 1) and worker_pool(llamacpp, 2) == ("prefork", 2)
    assert worker_pool(openai, 3) == ("threads", 5)
    assert entry_for(llamacpp).concurrency(llamacpp) == 1
    assert entry_for(openai).concurrency(openai) == 5
    assert backfill_options({}, False, openai)["model"] == "m"
    assert backfill_options({}, False, llamacpp)["model"] == "bundled"
    # whether the insights ask the model changes the output: a rerun with another is refused
    assert backfill_options({}, False, openai)["insights_model"] is True
    assert backfill_options({}, False, llamacpp)["insights_model"] is False
    assert "insights_model" not in backfill_options({}, False, Settings(stage="rules"))


def test_a_new_backend_is_one_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry added to the registry is what the worker pool, the start probe, the engine
    factory and a backfill's checkpoint use: no other module changes."""
    template = get_template("chest_findings")
    fake = FakeEngine(
        {v.id: {"evidence": None, "status": "not_mentioned"} for v in template.variables}
    )
    probed: list[str] = []

    class Remote(EngineEntry):
        kind = "remote"

        def load(self, settings: Settings) -> ExtractionEngine:
            return fake

        def pool(self, settings: Settings, processes: int | None) -> Pool:
            return "threads", 9

        def probe(self, settings: Settings) -> None:
            probed.append(settings.stage)

        def checkpoint_options(self, settings: Settings) -> dict[str, str]:
            return {"engine": self.kind, "model": "remote-model"}

    monkeypatch.setitem(MODEL_ENGINES, "remote", Remote())
    settings = Settings(stage="llm").model_copy(update={"engine": "remote"})
    assert get_engine(settings) is fake
    assert worker_pool(settings) == ("threads", 9)
    probe_engine(settings)
    assert probed == ["llm"]
    options = backfill_options({}, False, settings)
    assert (options["engine"], options["model"]) == ("remote", "remote-model")
    with pytest.raises(EngineError, match="unknown RADBRIDGE_ENGINE"):
        get_engine(settings.model_copy(update={"engine": "missing"}))


def test_nothing_outside_the_registry_branches_on_the_engine_kind() -> None:
    """The worker, the serving commands, the CLI and the backfill ask the registry (`adapter/`
    validates the setting itself: it never imports `workers`)."""
    branch = re.compile(r"\.engine\s*(==|!=|in\b)|engine_kind|\"openai\"|\"llamacpp\"")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("workers", "app")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name not in ("engine_registry.py", "engine.py", "engine_openai.py")
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if branch.search(line)
    ]
    assert offenders == []
