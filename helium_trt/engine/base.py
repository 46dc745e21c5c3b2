"""The Engine protocol: what every LLM engine (embedded CPU, Triton/TensorRT-LLM) offers helium.

Boundary types are plain frozen dataclasses so the scheduler and runtime can build and inspect
them without importing torch or grpc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol, Sequence, runtime_checkable

# TensorRT-LLM KvCacheRetentionConfig semantics: priorities 0..100, 35 when nothing is said.
DEFAULT_RETENTION_PRIORITY = 35
MIN_RETENTION_PRIORITY = 0
MAX_RETENTION_PRIORITY = 100


@dataclass(frozen=True, slots=True)
class RetentionRange:
    """Token range [start, end) of the prompt kept with ``priority`` for ``duration_ms``.

    ``end=None`` means to the end of the prompt; ``duration_ms=None`` means no expiry. After the
    duration the blocks fall back to DEFAULT_RETENTION_PRIORITY. The latest explicit priority set
    on a block wins.
    """

    start: int
    end: int | None
    priority: int
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """Generation settings. temperature == 0 means greedy; top_k == 0 and top_p == 1 disable them."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_strings: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """One tokenized LLM call.

    ``priority`` orders waiting requests (higher first); retention fields steer KV eviction.
    ``reuse_prefix`` False: the request neither reuses cached prefix blocks nor publishes its
    own for later requests (a per-request "no prefix caching", for ablations).

    ``cache_salt`` (vLLM's ``cache_salt``) keys the request's KV blocks apart: only requests
    with the same salt share them, except the first ``num_public_tokens`` prompt tokens (whole
    blocks of a prefix the operator made public), which are keyed without it. None: unsalted.

    NOTE: TensorRT-LLM has no per-request switch for block reuse, so TritonEngine ignores
    ``reuse_prefix``; only the embedded engine honours it. The tensorrt_llm Triton model takes
    no cache salt either (docs/security.md), so TritonEngine ignores ``cache_salt`` too.
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    retention_ranges: tuple[RetentionRange, ...] = ()
    decode_retention_priority: int | None = None
    decode_retention_duration_ms: int | None = None
    priority: int = 0
    reuse_prefix: bool = True
    cache_salt: str | None = None
    num_public_tokens: int = 0


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """Newly generated tokens of one request, streamed as they are produced."""

    request_id: str
    token_ids: tuple[int, ...]
    text: str


@dataclass(frozen=True, slots=True)
class RequestResult:
    """Final record of a request; always the last item of its stream.

    finish_reason is one of "stop", "length", "cancelled", "error"; ``error`` says why on error.
    num_cached_tokens + num_computed_tokens == num_prompt_tokens (prefill accounting).
    """

    request_id: str
    output_token_ids: tuple[int, ...]
    text: str
    num_prompt_tokens: int
    num_cached_tokens: int
    num_computed_tokens: int
    finish_reason: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WarmResult:
    """Outcome of a prefill-only warm-up."""

    num_prompt_tokens: int
    num_cached_tokens: int
    num_computed_tokens: int


@dataclass(frozen=True, slots=True)
class EngineHealth:
    """Whether an engine takes requests now; ``reason`` says why not (None while healthy)."""

    healthy: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """Static facts about an engine the scheduler plans with."""

    model_name: str
    block_size: int
    num_blocks: int
    max_model_len: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> token ids; ``chat_format`` says how chat messages become prompt text."""

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without adding BOS/EOS (special tokens in the text are parsed)."""

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids``, special tokens skipped."""


@runtime_checkable
class Engine(Protocol):
    """An LLM engine. All methods are safe to call from one asyncio event loop.

    Contract:
    - ``generate`` yields zero or more TokenDelta then exactly one RequestResult, also on error
      or cancel (never raises for a bad request once started: the error is in the result);
      invalid input detectable up front (token ids out of vocabulary, prompt + max_tokens over
      the context window) raises InvalidRequestError before anything is queued.
    - ``cancel`` stops a request and frees its KV blocks; its stream ends with "cancelled".
    - ``warm`` prefills a prefix without decoding, so later requests sharing it reuse its KV.
    - ``num_resident_tokens`` is how many leading tokens of ``token_ids`` are cached now.
    - ``warm`` and ``num_resident_tokens`` take ``cache_salt`` / ``num_public_tokens`` keywords
      with EngineRequest's meaning; callers pass them only when salting (``cache_salt`` set),
      so engines that are never served to tenants need not take them.
    - ``health`` is cheap (no I/O) and safe to poll. An engine that fails ends every in-flight
      request at once ("error", naming the engine) and reports itself unhealthy until it works
      again; meanwhile ``generate`` and ``warm`` raise EngineUnavailableError at once.
    """

    info: EngineInfo
    tokenizer: Tokenizer

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]: ...

    async def warm(
        self, prompt_token_ids: Sequence[int], retention_ranges: Sequence[RetentionRange] = ()
    ) -> WarmResult: ...

    async def cancel(self, request_id: str) -> None: ...

    def num_resident_tokens(self, token_ids: Sequence[int]) -> int: ...

    def num_free_blocks(self) -> int: ...

    def health(self) -> EngineHealth: ...

    async def close(self) -> None: ...
