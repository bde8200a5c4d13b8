"""The llguidance decode loop: token mask per step, greedy choice, forced tokens in one batch.

Per step the `llguidance.LLMatcher` computes the set of tokens the JSON schema allows; every
other logit is set to -inf and the best allowed token is taken (temperature 0). Whenever the
schema leaves only one way to go on (keys, punctuation, the rest of an enum value), the matcher's
fast-forward tokens are appended without sampling and evaluated together with the sampled token
as ONE batch. When the output is complete and only end-of-sequence is allowed, the loop stops
without another model evaluation.

The loop only needs a `TokenModel` (evaluate tokens, read the last logits); `workers.engine`
provides one over llama-cpp-python's low-level API.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from workers.errors import ExtractionError


class TokenModel(Protocol):
    """What the decode loop needs from a model."""

    @property
    def n_vocab(self) -> int:
        """Size of the logits vector."""
        ...

    @property
    def eos_token(self) -> int:
        """The end-of-sequence token."""
        ...

    def evaluate(self, tokens: Sequence[int]) -> None:
        """Append `tokens` to the context (one batch)."""
        ...

    def last_logits(self) -> npt.NDArray[np.float32]:
        """Logits after the last evaluated token (may be a view; never modified here)."""
        ...


@dataclass(frozen=True)
class TokenStep:
    """One output token: id, text piece, log-probability, and whether the schema forced it.

    `logprob` is renormalised over the tokens the schema allowed at that step (the model's choice
    among valid continuations); a forced token has logprob 0.0 (probability 1).
    """

    token: int
    text: str
    logprob: float
    forced: bool


@dataclass
class Decoded:
    """What one run of the loop produced (token ids, before detokenising)."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    model_seconds: float = 0.0
    constraint_seconds: float = 0.0
    evaluations: int = 0

    @property
    def forced_count(self) -> int:
        """How many output tokens the schema forced."""
        return sum(self.forced)


def allowed_from_bitmask(bitmask: npt.NDArray[np.int32], n_vocab: int) -> npt.NDArray[np.bool_]:
    """Expand llguidance's 32-bit-word token mask (bit i of word j = token 32j+i) to booleans."""
    bits = np.unpackbits(bitmask.view(np.uint8), bitorder="little")
    return bits[:n_vocab].astype(bool)


def masked_choice(
    logits: npt.NDArray[np.float32], allowed: npt.NDArray[np.bool_]
) -> tuple[int, float]:
    """Greedy pick among allowed tokens; returns (token, log-probability renormalised over them)."""
    masked = np.where(allowed, logits, np.float32(-np.inf))
    token = int(np.argmax(masked))
    if not allowed[token]:
        raise ExtractionError("the schema allows no token at this step")
    top = float(masked[token])
    log_sum = top + math.log(float(np.exp(masked - top).sum()))
    return token, top - log_sum


def _check(matcher: Any, ok: bool, what: str) -> None:
    if not ok or matcher.is_error():
        raise ExtractionError(f"llguidance refused {what}: {matcher.get_error()}")


def decode_constrained(
    model: TokenModel, matcher: Any, pending: Sequence[int], *, max_tokens: int
) -> Decoded:
    """Greedy constrained decoding. `pending` = prompt tokens not yet in the model's context.

    Returns at most `max_tokens` output tokens; raises ExtractionError when the matcher refuses
    a token or the output is not complete (not accepted by the schema) within `max_tokens`.
    """
    result = Decoded()
    batch = list(pending)
    words = (model.n_vocab + 31) // 32
    bitmask = np.zeros(words, dtype=np.int32)
    eos = model.eos_token
    while True:
        started = time.perf_counter()
        forced = matcher.compute_ff_tokens()[: max_tokens - len(result.tokens)]
        if forced:
            _check(matcher, matcher.consume_tokens(forced), "forced tokens")
            batch.extend(forced)
            result.tokens.extend(forced)
            result.logprobs.extend([0.0] * len(forced))
            result.forced.extend([True] * len(forced))
        if matcher.is_stopped() or len(result.tokens) >= max_tokens:
            result.constraint_seconds += time.perf_counter() - started
            break
        matcher.unsafe_compute_mask_ptr(bitmask.ctypes.data, bitmask.nbytes)
        _check(matcher, True, "to compute a mask")
        allowed = allowed_from_bitmask(bitmask, model.n_vocab)
        done = matcher.is_accepting() and allowed[eos] and np.count_nonzero(allowed) == 1
        result.constraint_seconds += time.perf_counter() - started
        if done:  # only end-of-sequence is left: no need to evaluate the last batch
            break
        started = time.perf_counter()
        model.evaluate(batch)
        result.evaluations += 1
        logits = model.last_logits()
        after_eval = time.perf_counter()
        result.model_seconds += after_eval - started
        token, logprob = masked_choice(logits, allowed)
        _check(matcher, matcher.consume_token(token), f"token {token}")
        result.constraint_seconds += time.perf_counter() - after_eval
        if token == eos:
            break
        result.tokens.append(token)
        result.logprobs.append(logprob)
        result.forced.append(False)
        batch = [token]
    if not matcher.is_accepting():
        raise ExtractionError(
            f"output incomplete after {len(result.tokens)} tokens (max_tokens {max_tokens})"
        )
    return result
