"""What the LLM stage needs from a model backend: the `ExtractionEngine` Protocol.

The pipeline (`workers.llm_stage.extract`) and the stage runner (`workers.stages.run_stage`)
depend on this Protocol only. Implementations, one class each (a new backend = one class):

- `llamacpp` (`workers.engine.Engine`): the model in this process, llama-cpp-python's low-level
  API driven by llguidance; prefix reuse; one generation at a time per process.
- `openai` (`workers.engine_openai.OpenAIEngine`): any OpenAI-compatible
  `/v1/chat/completions` server that honours `response_format: json_schema` (llama.cpp's
  `llama-server` or `radbridge llm-server`, vLLM, Ollama); many generations in flight.

`get_engine(settings)` in `workers.engine_registry` returns the process's engine for
`RADBRIDGE_ENGINE`; callers never pick a class themselves (the registry's entry per backend
also holds its worker pool, probe, concurrency and what a backfill records of it).

An engine is given the prompt as a system and a user turn (`ChatPrompt`): the in-process
engine renders them with the model's chat template, a server does it itself. It returns a
`Generation` whose text is JSON VALID against the schema (else it raises ExtractionError), and,
where the backend gives them, one `TokenStep` per output token with its log-probability: the
pipeline's confidences come from these. An engine without log-probabilities returns no steps and
every confidence is None (unavailable), never a made-up number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from mappings.report import ModelInfo
from workers.decoding import TokenStep

JsonSchema = dict[str, Any]

__all__ = ["ChatPrompt", "ExtractionEngine", "Generation", "JsonSchema", "TokenStep"]


@dataclass(frozen=True)
class ChatPrompt:
    """The prompt as chat turns: `system` is identical for every report of a template (it goes
    first so a prefix cache can reuse it), `user` carries the report."""

    system: str
    user: str


@dataclass
class Generation:
    """The result of one constrained generation.

    `prompt_tokens_evaluated` counts the prompt tokens after the reused prefix (a server that
    does not say: all of them); `steps` holds one `TokenStep` per output token when the backend
    gives log-probabilities, else it is empty; `model_seconds` is time spent in llama.cpp
    evaluation, `constraint_seconds` time spent in masks, sampling and the matcher (in-process
    only).
    """

    text: str
    prompt_tokens: int
    prompt_tokens_evaluated: int
    completion_tokens: int
    forced_tokens: int
    seconds: float
    steps: list[TokenStep] = field(default_factory=list)
    model_seconds: float = 0.0
    constraint_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        """Output tokens per second (forced tokens included)."""
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def has_logprobs(self) -> bool:
        """Whether confidences can be computed (the backend returned per-token log-probabilities)."""
        return bool(self.steps)


class ExtractionEngine(Protocol):
    """A model backend for the LLM stage (see the module docstring)."""

    @property
    def model_info(self) -> ModelInfo:
        """Name, version and SHA-256 of the model: the FHIR Device of the extraction."""
        ...

    def generate(self, prompt: ChatPrompt, schema: JsonSchema, *, max_tokens: int) -> Generation:
        """JSON constrained to `schema`, greedy (temperature 0), at most `max_tokens` tokens.

        Raises ExtractionError when the output is incomplete or does not validate against the
        schema (never returns it), EngineUnavailable when the backend cannot be reached now
        (retry later), EngineError when it is misconfigured.
        """
        ...
