"""The `openai` engine: any OpenAI-compatible `/v1/chat/completions` server with `json_schema`.

Works with llama.cpp's `llama-server` (and `radbridge llm-server`, the same server in-process),
vLLM and Ollama: the request carries `response_format: {"type": "json_schema", ...}`,
`temperature: 0` and `logprobs: true`. Settings: RADBRIDGE_ENGINE=openai,
RADBRIDGE_LLM_BASE_URL (default `http://127.0.0.1:8081/v1`, where `radbridge llm-server`
listens), RADBRIDGE_LLM_MODEL (default: the first model the server lists), RADBRIDGE_LLM_API_KEY,
RADBRIDGE_LLM_TIMEOUT_S, RADBRIDGE_LLM_CONCURRENCY.

llama.cpp servers (recognised by their `/props` endpoint) get the same constraint as the
in-process engine instead: the schema as an llguidance grammar with compact JSON
(`whitespace_flexible: false`) in llama.cpp's `grammar` field. With `response_format`,
llama.cpp's llguidance allows flexible whitespace, and SmolLM2 then spent ~611 output tokens per
chest report, mostly indentation, where the compact form needs about half (benchmarks/engines.py).

Trust nothing the server says about the schema: every answer is parsed and validated against
the schema here; text that is not valid JSON for it raises InvalidModelOutput (an
ExtractionError: the task retries it, nothing is filled in). Passing failures - connection
refused or reset, timeouts, 429, 502, 503, 504 - raise EngineUnavailable (retried, the message
stays queued, `Retry-After` honoured); any other refusal (400 for a schema the server cannot
take, 401, 404 for an unknown model) is an EngineError: configuration, not weather.

Confidence: the log-probabilities the server returns for the chosen tokens become the
generation's `steps`. They are the model's probabilities as the server reports them - llama.cpp
and vLLM report them BEFORE the schema mask, not renormalised over the allowed tokens as the
in-process engine does, and the server does not say which tokens the schema forced - so they
are lower than the in-process numbers for the same choice. A server that returns no
log-probabilities gives no steps: every confidence is None (unavailable), never invented.

Concurrency: the client is one `httpx.Client` per process (thread-safe, keep-alive pool) and a
semaphore keeps at most RADBRIDGE_LLM_CONCURRENCY requests in flight, whatever calls it (Celery
threads, the benchmark's thread pool).

Model identity (the FHIR Device): the served model id as name; as SHA-256 the server's
`digest` when it gives a sha256 one, else the file's own hash when the id is a GGUF path on this
machine (`radbridge llm-server` on the same host lists its model that way), else the SHA-256 of
`openai:<model id>` (the weights cannot be hashed from here: the Device then identifies the
served name, not the file; `version` says so).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from adapter.settings import Settings
from mappings.report import ModelInfo
from workers.decoding import TokenStep
from workers.errors import EngineError, EngineUnavailable, InvalidModelOutput
from workers.extraction_engine import ChatPrompt, Generation, JsonSchema
from workers.model_file import file_sha256

log = logging.getLogger("radbridge.engine.openai")

RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})
_SHA256 = re.compile(r"(?:sha256:)?([0-9a-f]{64})")
# The probe's schema: an answer no unconstrained model gives by chance.
PROBE_SCHEMA: JsonSchema = {
    "type": "object",
    "properties": {"radbridge_probe": {"type": "string", "enum": ["k7q9"]}},
    "required": ["radbridge_probe"],
    "additionalProperties": False,
}

__all__ = ["PROBE_SCHEMA", "OpenAIEngine", "ProbeResult", "get_openai_engine", "probe"]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _server_text(response: httpx.Response) -> str:
    """The server's own error message, shortened (it describes our request, not a report)."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", ""))[:200]
    return str(error or body)[:200]


class OpenAIEngine:
    """A chat-completions server as an `ExtractionEngine` (thread-safe; see module docstring)."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = settings.llm_base_url.rstrip("/")
        self.concurrency = settings.llm_concurrency
        self.seed = settings.seed
        self._model = settings.llm_model
        headers = {}
        if settings.llm_api_key is not None and settings.llm_api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {settings.llm_api_key.get_secret_value()}"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(settings.llm_timeout_s, connect=min(10.0, settings.llm_timeout_s)),
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
            transport=transport,
        )  # fmt: skip
        self.timeout_s = settings.llm_timeout_s
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._model_lock = threading.Lock()
        self._llamacpp: bool | None = None

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One HTTP exchange; the JSON answer, or the typed error (see module docstring)."""
        try:
            response = self._client.request(method, path, json=body)
        except httpx.TimeoutException as exc:  # reachable, maybe only slow: say how long
            waited = (
                min(10.0, self.timeout_s)
                if isinstance(exc, httpx.ConnectTimeout)
                else self.timeout_s
            )
            raise EngineUnavailable(
                f"model server {self.base_url} timed out after {waited:g} s "
                f"({type(exc).__name__}; RADBRIDGE_LLM_TIMEOUT_S)"
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise EngineUnavailable(
                f"model server {self.base_url} unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code in RETRYABLE_STATUS:
            raise EngineUnavailable(
                f"model server {self.base_url} busy or unavailable ({response.status_code})",
                status=response.status_code,
                retry_after=_retry_after(response),
            )
        if response.status_code >= 400:
            raise EngineError(
                f"model server {self.base_url} refused {path} ({response.status_code}): "
                f"{_server_text(response)}"
            )
        try:
            return response.json()
        except ValueError:
            raise EngineError(
                f"model server {self.base_url} answered {path} without JSON"
            ) from None

    def list_models(self) -> list[dict[str, Any]]:
        """The server's `/models` entries (`data`, or llama.cpp's `models`)."""
        body = self._request("GET", "/models")
        if not isinstance(body, dict):
            return []
        entries = body.get("data") or body.get("models") or []
        return [entry for entry in entries if isinstance(entry, dict)]

    @property
    def model(self) -> str:
        """RADBRIDGE_LLM_MODEL, else the first model the server lists (asked once)."""
        with self._model_lock:
            if self._model is None:
                models = self.list_models()
                if not models:
                    raise EngineError(f"model server {self.base_url} lists no model")
                self._model = str(
                    models[0].get("id") or models[0].get("model") or models[0]["name"]
                )
            return self._model

    @cached_property
    def model_info(self) -> ModelInfo:
        """The Device identity (see module docstring)."""
        model = self.model
        digest = None
        try:
            for entry in self.list_models():
                if model in (entry.get("id"), entry.get("model"), entry.get("name")):
                    digest = _SHA256.fullmatch(str(entry.get("digest") or "").lower())
                    break
        except EngineError:
            pass
        if digest is not None:
            return ModelInfo(name=_short_name(model), sha256=digest.group(1))
        path = Path(model)
        if path.suffix == ".gguf" and path.is_file():
            return ModelInfo(name=path.stem, sha256=file_sha256(path))
        import hashlib

        return ModelInfo(
            name=_short_name(model),
            version="served model (weights not hashed)",
            sha256=hashlib.sha256(f"openai:{model}".encode()).hexdigest(),
        )

    @property
    def is_llamacpp(self) -> bool:
        """Whether the server is llama.cpp's (its `/props` answers with `build_info`); asked once."""
        with self._model_lock:
            if self._llamacpp is None:
                root = self.base_url.removesuffix("/v1")
                try:
                    response = self._client.get(f"{root}/props")
                    body = response.json() if response.status_code == 200 else {}
                except (httpx.HTTPError, ValueError):
                    return False  # unreachable now: ask again next time
                self._llamacpp = isinstance(body, dict) and "build_info" in body
            return self._llamacpp

    def request_body(
        self, prompt: ChatPrompt, schema: JsonSchema, max_tokens: int
    ) -> dict[str, Any]:
        """The chat-completions request for one generation (see module docstring)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
            "temperature": 0.0,
            "seed": self.seed,
            "max_tokens": max_tokens,
            "logprobs": True,
        }
        if self.is_llamacpp:
            body["grammar"] = llguidance_grammar(schema)
        else:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "radbridge_extraction", "strict": True, "schema": schema},
            }
        return body

    def generate(self, prompt: ChatPrompt, schema: JsonSchema, *, max_tokens: int) -> Generation:
        """One schema-constrained completion, validated here (see module docstring)."""
        body = self.request_body(prompt, schema, max_tokens)
        with self._slots:
            started = time.perf_counter()
            answer = self._request("POST", "/chat/completions", body)
            seconds = time.perf_counter() - started
        return _generation(answer, schema, max_tokens, seconds)


def llguidance_grammar(schema: JsonSchema) -> str:
    """llama.cpp's llguidance grammar for `schema`, compact JSON like the in-process engine."""
    compact = {**schema, "x-guidance": {"whitespace_flexible": False}}
    return f"%llguidance {{}}\nstart: %json {json.dumps(compact)}"


def _short_name(model: str) -> str:
    """A path-like model id (llama-server lists the file path) as its file stem."""
    return Path(model).stem if model.endswith(".gguf") else model


def _generation(answer: Any, schema: JsonSchema, max_tokens: int, seconds: float) -> Generation:
    try:
        choice = answer["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise InvalidModelOutput("model server answer has no choices[0].message.content") from None
    if not isinstance(text, str):
        raise InvalidModelOutput("model server answer has no text content")
    if choice.get("finish_reason") == "length":
        raise InvalidModelOutput(f"output cut at max_tokens {max_tokens}")
    try:
        jsonschema.validate(json.loads(text), schema)
    except ValueError:
        raise InvalidModelOutput(
            "model output is not JSON (the server ignored the schema?)"
        ) from None
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise InvalidModelOutput(
            f"model output does not match the schema at {where} (the server ignored it?)"
        ) from None
    steps = _steps(choice.get("logprobs"))
    usage = answer.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return Generation(
        text=text,
        prompt_tokens=prompt_tokens,
        prompt_tokens_evaluated=prompt_tokens - cached,
        completion_tokens=int(usage.get("completion_tokens") or len(steps)),
        forced_tokens=0,  # the server does not say
        seconds=seconds,
        steps=steps,
    )


def _steps(logprobs: Any) -> list[TokenStep]:
    """TokenSteps from `choices[0].logprobs.content`; [] when absent or not matching the text."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return []
    steps = []
    for index, item in enumerate(content):
        if not isinstance(item, dict) or not isinstance(item.get("logprob"), (int, float)):
            return []
        raw = item.get("bytes")
        piece = (
            bytes(raw).decode("utf-8", "replace")
            if isinstance(raw, list)
            else str(item.get("token", ""))
        )
        steps.append(TokenStep(int(item.get("id", index)), piece, float(item["logprob"]), False))
    return steps


@dataclass(frozen=True)
class ProbeResult:
    """What the worker-start probe found: `reachable` False means start anyway and wait."""

    reachable: bool
    detail: str


def probe(engine: OpenAIEngine) -> ProbeResult:
    """Worker start: `/models`, then one tiny schema-constrained request.

    Unreachable (refused, timeout, 429/503): ProbeResult(reachable=False) - the worker starts
    and messages wait. Reachable but refusing the schema (4xx) or ignoring it (an answer that
    does not validate): EngineError - the worker must not start.
    """
    try:
        model = engine.model
        generation = engine.generate(
            ChatPrompt(system="Answer with JSON only.", user="Say hello."),
            PROBE_SCHEMA,
            max_tokens=32,
        )
    except EngineUnavailable as exc:
        return ProbeResult(False, str(exc))
    except InvalidModelOutput as exc:
        raise EngineError(
            f"model server {engine.base_url} does not honour response_format json_schema ({exc}); "
            "radbridge needs schema-constrained output (llama-server, vLLM and Ollama give it)"
        ) from None
    except EngineError as exc:
        raise EngineError(
            f"model server {engine.base_url} refuses the schema-constrained probe: {exc}"
        ) from None
    logprobs = "with" if generation.has_logprobs else "WITHOUT (confidences unavailable)"
    return ProbeResult(True, f"model {model} honours json_schema, {logprobs} log-probabilities")


_ENGINES: dict[tuple[object, ...], OpenAIEngine] = {}
_ENGINES_PID: list[int] = []
_ENGINES_LOCK = threading.Lock()


def get_openai_engine(settings: Settings) -> OpenAIEngine:
    """The process's client for these settings (a new one after fork: sockets are not shared)."""
    import os

    key = (
        settings.llm_base_url,
        settings.llm_model,
        settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        settings.llm_timeout_s,
        settings.llm_concurrency,
        settings.seed,
    )
    with _ENGINES_LOCK:
        if [os.getpid()] != _ENGINES_PID:
            _ENGINES.clear()
            _ENGINES_PID[:] = [os.getpid()]
        engine = _ENGINES.get(key)
        if engine is None:
            engine = OpenAIEngine(settings)
            _ENGINES[key] = engine
        return engine
