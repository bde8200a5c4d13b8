"""The engine registry: one entry per way of running extraction, and every decision that
depends on it. Callers never branch on RADBRIDGE_ENGINE or on the rules stage themselves.

An entry (`EngineEntry`) says how to `load` its model engine (`ExtractionEngine`), the Celery
worker `pool` (kind and size), the worker-start `probe`, how many extractions one process keeps
in `concurrency` (the thread pool of `radbridge backfill` too) and what a backfill's checkpoint
records of it (`checkpoint_options`). The entries:

- `rules`: the rules stage (RADBRIDGE_STAGE=rules, whatever RADBRIDGE_ENGINE says): no model.
- `llamacpp` (`workers.engine.Engine`): the model in each worker process.
- `openai` (`workers.engine_openai.OpenAIEngine`): a model server, many requests in flight.

A new backend is one class here (and its RADBRIDGE_ENGINE value in `adapter.settings`).
"""

from __future__ import annotations

import logging
import os
from typing import ClassVar

from adapter.settings import Settings
from workers.errors import EngineError
from workers.extraction_engine import ExtractionEngine

log = logging.getLogger("radbridge.engine")

Pool = tuple[str, int]
"""A Celery worker pool: its kind (`solo`, `prefork`, `threads`) and its concurrency."""


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity; the machine's count elsewhere)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _processes(count: int) -> Pool:
    return ("prefork" if count > 1 else "solo"), count


class EngineEntry:
    """One way of running extraction (see the module docstring); the defaults are an
    in-process engine's: one extraction at a time per process, nothing to probe."""

    kind: ClassVar[str]

    def load(self, settings: Settings) -> ExtractionEngine:
        """The process's model engine (loaded on first use, after fork, and kept)."""
        raise NotImplementedError

    def pool(self, settings: Settings, processes: int | None) -> Pool:
        """The worker's Celery pool; `processes`: `radbridge worker --concurrency`, else
        RADBRIDGE_WORKER_PROCESSES (None: the entry's default)."""
        raise NotImplementedError

    def probe(self, settings: Settings) -> None:
        """Worker start: check what the engine needs (EngineError: the worker must not start)."""

    def concurrency(self, settings: Settings) -> int:
        """Extractions in flight in one process (a backfill's threads)."""
        return 1

    def checkpoint_options(self, settings: Settings) -> dict[str, str]:
        """What a backfill's output depends on of this engine (its checkpoint records it)."""
        return {}


class RulesOnly(EngineEntry):
    """The rules stage: no model. The work is CPU-bound Python (parse, rules, Bundle, store),
    so the worker is a PREFORK pool with one process per CPU core by default: processes, not
    threads, use the cores; each opens its own store and costs ~100 MB."""

    kind = "rules"

    def load(self, settings: Settings) -> ExtractionEngine:
        raise EngineError("RADBRIDGE_STAGE=rules uses no model engine")

    def pool(self, settings: Settings, processes: int | None) -> Pool:
        return _processes(processes or cpu_cores())


class LlamaCpp(EngineEntry):
    """The model in this process (`workers.engine.Engine`). A llama.cpp context serves one
    sequence (threads would queue on the engine's lock) and each pool process loads the model
    again (its KV cache and RADBRIDGE_N_THREADS threads: more processes than cores only
    compete), so the pool is `solo` by default, or `prefork` with `processes` processes."""

    kind = "llamacpp"

    def load(self, settings: Settings) -> ExtractionEngine:
        from workers.engine import get_llamacpp_engine

        return get_llamacpp_engine(settings)

    def pool(self, settings: Settings, processes: int | None) -> Pool:
        return _processes(processes or 1)

    def checkpoint_options(self, settings: Settings) -> dict[str, str]:
        model = settings.model_path.name if settings.model_path else "bundled"
        return {"engine": self.kind, "model": model}


class OpenAICompatible(EngineEntry):
    """A model server (`workers.engine_openai.OpenAIEngine`, RADBRIDGE_LLM_BASE_URL).

    The worker is a THREAD pool with RADBRIDGE_LLM_CONCURRENCY threads in one process, so that
    many extractions are in flight against the server. Why threads: a task spends nearly all
    its time waiting on the server's HTTP answer (the GIL is released while waiting; the rules
    stage and the Bundle take milliseconds), so N threads keep N requests in flight at the cost
    of one process (one store pool, one keep-alive connection pool, imports loaded once). Each
    message stays one Celery task - `acks_late`, bounded retries, the store's claim and
    `worker_prefetch_multiplier=1` keep their per-message meaning, and the worker reserves only
    as many messages as it has threads, the rest wait in Redis for other workers. asyncio was
    rejected: Celery does not run coroutines as tasks and the pipeline and store are
    synchronous; prefork with N processes would work but pays N processes for I/O-bound work.
    `processes` is not used: start more workers to add more."""

    kind = "openai"

    def load(self, settings: Settings) -> ExtractionEngine:
        from workers.engine_openai import get_openai_engine

        return get_openai_engine(settings)

    def pool(self, settings: Settings, processes: int | None) -> Pool:
        return "threads", settings.llm_concurrency

    def probe(self, settings: Settings) -> None:
        """Unreachable: log a warning and return - the worker starts, messages wait and are
        retried until the server answers. Reachable but refusing or ignoring `json_schema`:
        EngineError, the worker must not start."""
        from workers.engine_openai import get_openai_engine, probe

        result = probe(get_openai_engine(settings))
        if result.reachable:
            log.info("model server ready: %s", result.detail)
        else:
            log.warning(
                "model server not reachable, starting anyway (messages wait and are retried): %s",
                result.detail,
            )

    def concurrency(self, settings: Settings) -> int:
        return settings.llm_concurrency

    def checkpoint_options(self, settings: Settings) -> dict[str, str]:
        return {"engine": self.kind, "model": settings.llm_model or "the server's first model"}


RULES_ONLY = RulesOnly()
MODEL_ENGINES: dict[str, EngineEntry] = {e.kind: e for e in (LlamaCpp(), OpenAICompatible())}
"""The model backends by RADBRIDGE_ENGINE."""


def model_engine(settings: Settings) -> EngineEntry:
    """The entry of RADBRIDGE_ENGINE (the model the llm and hybrid stages use)."""
    try:
        return MODEL_ENGINES[settings.engine]
    except KeyError:
        raise EngineError(f"unknown RADBRIDGE_ENGINE {settings.engine!r}") from None


def entry_for(settings: Settings) -> EngineEntry:
    """The entry that decides for these settings: rules-only for the rules stage, else the
    model engine's."""
    return RULES_ONLY if settings.stage == "rules" else model_engine(settings)


def get_engine(settings: Settings) -> ExtractionEngine:
    """The process's model engine for RADBRIDGE_ENGINE: the one entry point callers use."""
    return model_engine(settings).load(settings)


def worker_pool(settings: Settings, processes: int | None = None) -> Pool:
    """The Celery pool and concurrency of a worker: `processes` (`radbridge worker
    --concurrency`), else RADBRIDGE_WORKER_PROCESSES, else the entry's default."""
    return entry_for(settings).pool(settings, processes or settings.worker_processes)


def probe_engine(settings: Settings) -> None:
    """Worker start: the entry's probe (EngineError: the worker must not start)."""
    entry_for(settings).probe(settings)
