"""The `openai` engine against a tiny local HTTP server on a real socket (no model): what it
sends, how it validates what comes back, and which failures are retryable.

The server answers each POST with the next canned reply; tests/test_llm_server.py runs the
engine against the real llama.cpp server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from adapter.settings import Settings
from mappings.report import FindingStatus, Report
from mappings.template import get_template
from mappings.template_output import output_json_schema
from workers.engine_openai import PROBE_SCHEMA, OpenAIEngine, probe
from workers.engine_registry import get_engine, probe_engine, worker_pool
from workers.errors import EngineError, EngineUnavailable, ExtractionError, InvalidModelOutput
from workers.extraction_engine import ChatPrompt
from workers.llm_stage import extract

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = get_template("chest_findings")
REPORT = Report(source_format="hl7v2", report_id="r1", text="Small right pleural effusion.")
PROMPT = ChatPrompt("system text", "user text")

Reply = tuple[int, dict[str, str], Any]


class FakeServer:
    """An OpenAI-compatible stand-in: GET /v1/models lists one model, each POST gets the next
    canned (status, headers, body) and the request body is kept."""

    def __init__(self, replies: list[Reply], *, llamacpp: bool = False) -> None:
        self.replies = list(replies)
        self.llamacpp = llamacpp
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/props":
                    props = {"build_info": "b1"} if owner.llamacpp else {}
                    self._send(200 if owner.llamacpp else 404, {}, props)
                    return
                self._send(200, {}, {"object": "list", "data": [{"id": "tiny-model"}]})

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                owner.requests.append(json.loads(self.rfile.read(length)))
                self._send(*owner.replies.pop(0))

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[FakeServer]:
    fake = FakeServer(request.param)
    yield fake
    fake.close()


def _engine(base_url: str, **settings: Any) -> OpenAIEngine:
    return OpenAIEngine(Settings(engine="openai", llm_base_url=base_url, **settings))


def _completion(content: str, logprobs: list[tuple[str, float]] | None = None) -> Reply:
    choice: dict[str, Any] = {
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": content},
    }
    if logprobs is not None:
        choice["logprobs"] = {
            "content": [
                {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in logprobs
            ]
        }
    usage = {
        "prompt_tokens": 50,
        "completion_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 30},
    }
    return 200, {}, {"choices": [choice], "usage": usage}


def _answer(**overrides: dict[str, Any]) -> str:
    answer: dict[str, Any] = {
        v.id: {"evidence": None, "status": "not_mentioned", "locations": None}
        for v in TEMPLATE.variables
    }
    answer.update(overrides)
    return json.dumps(answer, separators=(",", ":"))


EFFUSION = {"evidence": "Small right pleural effusion", "status": "present", "locations": None}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("server", [[_completion('{"radbridge_probe":"k7q9"}')]], indirect=True)
def test_request_carries_schema_greedy_and_logprobs(server: FakeServer) -> None:
    engine = _engine(server.base_url, llm_api_key="secret", seed=7)
    generation = engine.generate(PROMPT, PROBE_SCHEMA, max_tokens=32)
    body = server.requests[0]
    assert body["model"] == "tiny-model"  # the first listed model when RADBRIDGE_LLM_MODEL is unset
    assert body["messages"] == [
        {"role": "system", "content": "system text"},
        {"role": "user", "content": "user text"},
    ]
    assert (body["temperature"], body["seed"], body["max_tokens"], body["logprobs"]) == (
        0.0,
        7,
        32,
        True,
    )
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == PROBE_SCHEMA
    assert generation.text == '{"radbridge_probe":"k7q9"}'
    assert (generation.prompt_tokens, generation.prompt_tokens_evaluated) == (50, 20)
    assert not generation.has_logprobs


@pytest.mark.parametrize(
    "server",
    [
        [
            _completion("Sure! Here is the answer: effusion present."),
            _completion('{"radbridge_probe":"nope"}'),
        ]
    ],
    indirect=True,
)
def test_output_that_is_not_valid_json_for_the_schema_is_a_typed_error(server: FakeServer) -> None:
    engine = _engine(server.base_url)
    with pytest.raises(InvalidModelOutput, match="not JSON"):
        engine.generate(PROMPT, PROBE_SCHEMA, max_tokens=32)
    with pytest.raises(InvalidModelOutput, match="radbridge_probe"):
        engine.generate(PROMPT, PROBE_SCHEMA, max_tokens=32)
    assert issubclass(InvalidModelOutput, ExtractionError)  # the task retries it; never accepted


@pytest.mark.parametrize("server", [[_completion("{not json at all")]], indirect=True)
def test_the_pipeline_never_accepts_invalid_output(server: FakeServer) -> None:
    with pytest.raises(InvalidModelOutput):
        extract(REPORT, TEMPLATE, _engine(server.base_url), settings=Settings())


@pytest.mark.parametrize(
    "server",
    [
        [
            (503, {"Retry-After": "7"}, {"error": {"message": "loading model"}}),
            (429, {}, {}),
            (400, {}, {"error": {"message": "bad schema"}}),
        ]
    ],
    indirect=True,
)
def test_busy_is_retryable_a_refusal_is_not(server: FakeServer) -> None:
    engine = _engine(server.base_url)
    with pytest.raises(EngineUnavailable) as unavailable:
        engine.generate(PROMPT, PROBE_SCHEMA, max_tokens=32)
    assert (unavailable.value.status, unavailable.value.retry_after) == (503, 7.0)
    with pytest.raises(EngineUnavailable):
        engine.generate(PROMPT, PROBE_SCHEMA, max_tokens=32)
    with pytest.raises(EngineError, match="bad schema") as refused:
        engine.generate(PROMPT, PROBE_SCHEMA, max_tokens=32)
    assert not isinstance(refused.value, EngineUnavailable)


def test_connection_refused_is_retryable_and_the_worker_starts_anyway() -> None:
    settings = Settings(engine="openai", llm_base_url=f"http://127.0.0.1:{_free_port()}/v1")
    engine = OpenAIEngine(settings)
    with pytest.raises(EngineUnavailable):
        engine.generate(PROMPT, PROBE_SCHEMA, max_tokens=32)
    assert probe(engine).reachable is False
    probe_engine(settings)  # logs, does not raise: messages wait for the server


def test_a_slow_server_times_out_with_the_time_it_was_given() -> None:
    """Issue 24 item 7: a server that accepts the connection but does not answer in
    RADBRIDGE_LLM_TIMEOUT_S is reported as timed out after that many seconds (retryable), not as
    unreachable."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        base_url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        engine = _engine(base_url, llm_timeout_s=0.5, llm_model="m")
        with pytest.raises(EngineUnavailable) as slow:
            engine.generate(PROMPT, PROBE_SCHEMA, max_tokens=32)
        assert "timed out after 0.5 s" in str(slow.value) and "RADBRIDGE_LLM_TIMEOUT_S" in str(
            slow.value
        )
        assert "unreachable" not in str(slow.value)
        engine.close()
    finally:
        thread.join(timeout=10)
        for connection in accepted:
            connection.close()
        listener.close()


@pytest.mark.parametrize("server", [[_completion("Hello! How can I help?")]], indirect=True)
def test_a_server_that_ignores_the_schema_stops_the_worker(server: FakeServer) -> None:
    with pytest.raises(EngineError, match="does not honour response_format json_schema"):
        probe(_engine(server.base_url))


@pytest.mark.parametrize("server", [[_completion("Hello! How can I help?")]], indirect=True)
def test_the_start_probe_asks_the_server_only_when_a_stage_uses_the_model(
    server: FakeServer,
) -> None:
    """The engine registry: a rules-stage worker needs no model server, so it is not asked
    (and its answer cannot stop the worker); a model stage's worker is stopped by it."""
    settings = Settings(engine="openai", llm_base_url=server.base_url, llm_model="m")
    probe_engine(settings.model_copy(update={"stage": "rules"}))
    assert server.requests == []
    with pytest.raises(EngineError, match="does not honour response_format json_schema"):
        probe_engine(settings.model_copy(update={"stage": "hybrid"}))
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "server", [[(400, {}, {"error": {"message": "response_format not supported"}})]], indirect=True
)
def test_a_server_that_refuses_the_schema_stops_the_worker(server: FakeServer) -> None:
    with pytest.raises(EngineError, match="refuses the schema-constrained probe"):
        probe(_engine(server.base_url))


@pytest.mark.parametrize(
    "server",
    [[
        _completion('{"radbridge_probe":"k7q9"}', [('{"', 0.0), ("radbridge_probe", -0.1), ('":"', 0.0), ("k7q9", -0.2), ('"}', 0.0)]),
        _completion(_answer(pleural_effusion=EFFUSION)),
        _completion(_answer(pleural_effusion=EFFUSION), [(piece, -0.05) for piece in [_answer(pleural_effusion=EFFUSION)]]),
    ]],
    indirect=True,
)  # fmt: skip
def test_confidence_from_logprobs_else_unavailable(server: FakeServer) -> None:
    engine = _engine(server.base_url)
    assert probe(engine).reachable
    settings = Settings()
    without = extract(REPORT, TEMPLATE, engine, settings=settings).value_of("pleural_effusion")
    assert without is not None and without.status is FindingStatus.PRESENT
    assert without.confidence is None  # no log-probabilities: unavailable, not invented
    with_lp = extract(REPORT, TEMPLATE, engine, settings=settings).value_of("pleural_effusion")
    assert with_lp is not None and with_lp.confidence == pytest.approx(0.9512, abs=1e-4)


def test_model_identity_for_the_device(tmp_path: Path) -> None:
    gguf = tmp_path / "local.gguf"
    gguf.write_bytes(b"GGUF weights")
    from workers.engine import file_sha256

    engine = OpenAIEngine(Settings(engine="openai", llm_model=str(gguf)))
    assert engine.model_info.name == "local" and engine.model_info.sha256 == file_sha256(gguf)
    served = OpenAIEngine(
        Settings(
            engine="openai",
            llm_model="qwen2.5:7b",
            llm_base_url=f"http://127.0.0.1:{_free_port()}/v1",
        )
    ).model_info
    assert served.name == "qwen2.5:7b" and served.version == "served model (weights not hashed)"


def test_engine_selection_and_worker_pool() -> None:
    settings = Settings(engine="openai", llm_concurrency=6)
    assert isinstance(get_engine(settings), OpenAIEngine)
    assert get_engine(settings) is get_engine(settings)
    assert worker_pool(settings, 3) == ("threads", 6)
    assert worker_pool(Settings(), 1) == ("solo", 1)
    assert worker_pool(Settings(), 2) == ("prefork", 2)


def test_engines_satisfy_the_protocol_for_mypy(tmp_path: Path) -> None:
    """A fake engine, the llama.cpp engine and the server engine type-check as ExtractionEngine
    (strict mypy, no `type: ignore`); a class missing `generate` does not."""
    check = tmp_path / "protocol_check.py"
    check.write_text(
        "from tests.fakes import FakeEngine\n"
        "from workers.engine import Engine\n"
        "from workers.engine_openai import OpenAIEngine\n"
        "from workers.extraction_engine import ExtractionEngine\n"
        "def as_engine(e: ExtractionEngine) -> ExtractionEngine:\n    return e\n"
        "def check(a: FakeEngine, b: Engine, c: OpenAIEngine) -> None:\n"
        "    as_engine(a)\n    as_engine(b)\n    as_engine(c)\n"
        "class Broken:\n    model_info = FakeEngine.model_info\n"
        "as_engine(Broken())\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-error-summary", str(check)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and "Broken" in errors[0], result.stdout


def test_schema_of_a_real_template_is_sent_unchanged() -> None:
    engine = _engine("http://127.0.0.1:9/v1", llm_model="m")
    body = engine.request_body(PROMPT, output_json_schema(TEMPLATE), 512)
    assert body["response_format"]["json_schema"]["schema"] == output_json_schema(TEMPLATE)


def test_a_llamacpp_server_gets_the_compact_llguidance_grammar() -> None:
    """llama.cpp (its /props names a build) gets the in-process engine's constraint: compact JSON."""
    fake = FakeServer([_completion('{"radbridge_probe":"k7q9"}')], llamacpp=True)
    try:
        engine = _engine(fake.base_url)
        assert engine.generate(PROMPT, PROBE_SCHEMA, max_tokens=32).text.startswith('{"radbridge')
    finally:
        fake.close()
    body = fake.requests[0]
    assert "response_format" not in body
    assert body["grammar"].startswith("%llguidance {}\nstart: %json {")
    assert '"whitespace_flexible": false' in body["grammar"]
