"""Model stand-ins for the pipeline unit tests (the code around the engine, not the engine)."""

from __future__ import annotations

import json
from typing import Any

from mappings.report import ModelInfo
from workers.decoding import TokenStep
from workers.extraction_engine import ChatPrompt, Generation


def fake_generation(pieces: list[tuple[str, float, bool]]) -> Generation:
    """A Generation from (token text, logprob, forced) pieces."""
    return Generation(
        text="".join(p[0] for p in pieces), prompt_tokens=100, prompt_tokens_evaluated=20,
        completion_tokens=len(pieces), forced_tokens=sum(p[2] for p in pieces), seconds=0.5,
        steps=[TokenStep(i, text, lp, forced) for i, (text, lp, forced) in enumerate(pieces)],
    )  # fmt: skip


class FakeEngine:
    """An `ExtractionEngine` (workers.extraction_engine) that is not a model: returns a fixed
    Generation and records the prompts and max_tokens it was given. It satisfies the Protocol
    structurally (mypy checks it in tests/test_engine_protocol.py), no `type: ignore`."""

    model_info = ModelInfo(name="fake", sha256="f" * 64)

    def __init__(self, answer: dict[str, Any] | str) -> None:
        self.text = answer if isinstance(answer, str) else json.dumps(answer)
        self.prompts: list[str] = []
        self.max_tokens: list[int] = []

    def chat_prompt(self, system: str, user: str) -> str:
        return f"{system}\n---\n{user}"

    def generate(
        self, prompt: ChatPrompt, schema: dict[str, Any], *, max_tokens: int
    ) -> Generation:
        return self.generate_json(
            self.chat_prompt(prompt.system, prompt.user), schema, max_tokens=max_tokens
        )

    def generate_json(self, prompt: str, schema: dict[str, Any], *, max_tokens: int) -> Generation:
        self.prompts.append(prompt)
        self.max_tokens.append(max_tokens)
        return Generation(
            text=self.text, prompt_tokens=300, prompt_tokens_evaluated=40,
            completion_tokens=90, forced_tokens=60, seconds=0.25,
        )  # fmt: skip
