"""Engine over an OpenAI-compatible completions server (vLLM with prefix caching, ...), streaming.

Prompts go as token id lists, so the server computes exactly the tokens helium would. Replies
stream (``"stream": true``, server-sent events): each piece of text is a TokenDelta the moment
it arrives, so a prefix leader releases its followers at its first token and the time to first
token of every request is measured (``timings``). Cancelling a request, or no longer reading
its stream, closes its connection: that is how these servers learn to abort a request and free
its KV blocks. The server's own prefix cache decides reuse;
``usage.prompt_tokens_details.cached_tokens`` reports it (vLLM needs
``--enable-prompt-tokens-details``).

``num_resident_tokens`` is this client's own view: the whole blocks of the prompts and outputs
it sent, least recently used dropped past the server's block count (a server that evicts
sooner makes it optimistic; placement still follows prefix affinity).

NOTE: the reply text is re-encoded with the local tokenizer for token counts unless the server
sends token ids (``token_ids`` in a choice).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator, Sequence
from urllib.parse import urlsplit

from helium_trt.engine.base import (
    EngineHealth, EngineInfo, EngineRequest, RequestResult, RetentionRange, TokenDelta, Tokenizer,
    WarmResult,
)
from helium_trt.engine.openai.sse import (
    Endpoint, HttpStatusError, encode_request, request_json, sse_events,
)
from helium_trt.engine.validation import validate_request
from helium_trt.errors import EngineUnavailableError, InvalidRequestError
from helium_trt.scheduler.simulate import SimulatedCache

MAX_TIMINGS = 4096


@dataclass(frozen=True, slots=True)
class StreamTiming:
    """One finished request: milliseconds from sending it to its first text and to its end."""

    request_id: str
    ttft_ms: float | None
    total_ms: float
    finish_reason: str


@dataclass(slots=True)
class _Reply:
    pieces: list[str]
    token_ids: list[int]
    finish_reason: str | None = None
    cached: int = 0
    first_ms: float | None = None


class OpenAIHttpEngine:
    """Engine protocol over ``POST /v1/completions`` of an OpenAI-compatible server.

    ``shares_inflight_prefixes``: the server reuses the blocks of a prompt another request is
    still prefilling (vLLM does), so the dispatcher holds no siblings behind a prefix leader.
    """

    def __init__(self, url: str, model: str, tokenizer: Tokenizer, info: EngineInfo,
                 timeout_s: float = 600.0, shares_inflight_prefixes: bool = True):
        self.endpoint = parse_endpoint(url)
        self._model = model
        self._timeout_s = timeout_s
        self.tokenizer = tokenizer
        self.info = info
        self.shares_inflight_prefixes = shares_inflight_prefixes
        self.timings: deque[StreamTiming] = deque(maxlen=MAX_TIMINGS)
        self._ledger = SimulatedCache(info.block_size, info.num_blocks)
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._cancelled: set[str] = set()
        self._closed = False

    @classmethod
    async def connect(cls, url: str, tokenizer: Tokenizer, model: str | None = None,
                      block_size: int = 16, num_blocks: int = 1 << 16,
                      timeout_s: float | None = 600.0) -> "OpenAIHttpEngine":
        """An engine for the server at ``url``: its first model (or ``model``) and that model's
        context window, read from ``GET /v1/models``. A call fails once the server has sent
        nothing for ``timeout_s`` (None: wait forever)."""
        endpoint = parse_endpoint(url)
        try:
            listing = (await request_json(endpoint, "GET", "/v1/models")).get("data") or []
        except (OSError, TimeoutError, ValueError, HttpStatusError) as exc:
            raise EngineUnavailableError(f"cannot reach {endpoint}: {exc}") from exc
        entry = next((m for m in listing if model is None or m.get("id") == model), None)
        if entry is None:
            raise InvalidRequestError(f"{endpoint} serves no model {model!r}"
                                      if model else f"{endpoint} lists no model")
        info = EngineInfo(model_name=entry["id"], block_size=block_size, num_blocks=num_blocks,
                          max_model_len=int(entry.get("max_model_len") or 2048),
                          vocab_size=getattr(tokenizer, "vocab_size", 1 << 31),
                          eos_token_ids=tuple(getattr(tokenizer, "eos_token_ids", ())))
        return cls(url, entry["id"], tokenizer, info, timeout_s=timeout_s)

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]:
        """Check the request now (InvalidRequestError; EngineUnavailableError once closed),
        then stream it once iterated."""
        if self._closed:
            raise EngineUnavailableError(self.health().reason)
        validate_request(request, self.info, self.info.vocab_size)
        return self._stream(request)

    async def warm(self, prompt_token_ids: Sequence[int],
                   retention_ranges: Sequence[RetentionRange] = ()) -> WarmResult:
        request = EngineRequest(f"warm-{time.monotonic_ns()}", tuple(prompt_token_ids))
        result = None
        async for item in self._stream(request, max_tokens=1):
            result = item
        assert isinstance(result, RequestResult)
        return WarmResult(result.num_prompt_tokens, result.num_cached_tokens,
                          result.num_computed_tokens)

    async def cancel(self, request_id: str) -> None:
        writer = self._writers.get(request_id)
        if writer is not None:
            self._cancelled.add(request_id)
            writer.close()

    def num_resident_tokens(self, token_ids: Sequence[int], **scope) -> int:
        return self._ledger.num_resident(token_ids)

    def num_free_blocks(self) -> int:
        return max(0, self.info.num_blocks - len(self._ledger))

    def health(self) -> EngineHealth:
        """Healthy until closed: a server's failures show in each call's result."""
        if self._closed:
            return EngineHealth(False, f"OpenAI engine at {self.endpoint} is closed")
        return EngineHealth(True)

    async def close(self) -> None:
        self._closed = True
        for request_id in list(self._writers):
            await self.cancel(request_id)

    async def _stream(self, request: EngineRequest,
                      max_tokens: int | None = None) -> AsyncIterator[TokenDelta | RequestResult]:
        rid, started = request.request_id, time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.endpoint.host, self.endpoint.port), self._timeout_s)
        except (OSError, TimeoutError) as exc:
            yield _failed(request, f"cannot reach {self.endpoint}: {exc or 'timed out'}")
            return
        self._writers[rid] = writer
        reply = _Reply([], [])
        try:
            writer.write(encode_request(self.endpoint, "POST", "/v1/completions",
                                        self._body(request, max_tokens)))
            await writer.drain()
            async for piece, ids in self._pieces(reader, reply, started):
                if len(reply.pieces) == 1:  # the prompt is computed: the server holds it now
                    self._ledger.insert(request.prompt_token_ids)
                yield TokenDelta(rid, ids, piece)
            yield self._result(request, reply, started)
        except HttpStatusError as exc:
            if exc.status == 400:
                raise InvalidRequestError(f"{self.endpoint} refused request {rid!r}: {exc.body}")
            yield self._end(request, reply, started, "error", f"{self.endpoint}: {exc}")
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError) as exc:
            if rid in self._cancelled:
                yield self._end(request, reply, started, "cancelled")
            else:
                yield self._end(request, reply, started, "error",
                                f"{self.endpoint}: {type(exc).__name__}: {exc}")
        finally:  # also when the caller stops reading: closing the connection aborts the request
            self._writers.pop(rid, None)
            self._cancelled.discard(rid)
            writer.close()

    async def _pieces(self, reader, reply: _Reply, started: float):
        """(text, token ids) of each streamed piece, filling ``reply`` as they come."""
        events = sse_events(reader)
        while True:
            try:
                async with asyncio.timeout(self._timeout_s):
                    event = await anext(events)
            except StopAsyncIteration:
                break
            usage = event.get("usage") or {}
            reply.cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens")
                               or reply.cached)
            for choice in event.get("choices") or ():
                reply.finish_reason = choice.get("finish_reason") or reply.finish_reason
                text, ids = choice.get("text") or "", list(choice.get("token_ids") or ())
                if not text and not ids:
                    continue
                if reply.first_ms is None:
                    reply.first_ms = (time.perf_counter() - started) * 1000.0
                reply.pieces.append(text)
                reply.token_ids.extend(ids)
                yield text, tuple(ids) or tuple(self.tokenizer.encode(text))
        if reply.finish_reason is None:
            raise ValueError("the stream ended before the reply did")

    def _result(self, request: EngineRequest, reply: _Reply, started: float) -> RequestResult:
        text = "".join(reply.pieces)
        output = tuple(reply.token_ids) or tuple(self.tokenizer.encode(text))
        self._ledger.insert(tuple(request.prompt_token_ids) + output)
        reason = "length" if reply.finish_reason == "length" else "stop"
        self._record(request.request_id, reply, started, reason)
        num_prompt = len(request.prompt_token_ids)
        cached = min(reply.cached, num_prompt)
        return RequestResult(request.request_id, output, text, num_prompt, cached,
                             num_prompt - cached, reason)

    def _end(self, request: EngineRequest, reply: _Reply, started: float, reason: str,
             error: str | None = None) -> RequestResult:
        self._record(request.request_id, reply, started, reason)
        return _failed(request, error, reason)

    def _record(self, request_id: str, reply: _Reply, started: float, reason: str) -> None:
        total = (time.perf_counter() - started) * 1000.0
        self.timings.append(StreamTiming(request_id, reply.first_ms, total, reason))

    def _body(self, request: EngineRequest, max_tokens: int | None) -> dict:
        s = request.sampling
        body = {
            "model": self._model, "prompt": list(request.prompt_token_ids),
            "max_tokens": max_tokens or s.max_tokens, "temperature": s.temperature,
            "top_p": s.top_p, "stream": True, "stream_options": {"include_usage": True},
        }
        if s.top_k:
            body["top_k"] = s.top_k
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop_strings:
            body["stop"] = list(s.stop_strings)
        if s.stop_token_ids:
            body["stop_token_ids"] = list(s.stop_token_ids)
        if s.ignore_eos:
            body["ignore_eos"] = True
        salt = getattr(request, "cache_salt", None)
        if salt is not None:  # vLLM keys the request's blocks apart under it
            body["cache_salt"] = salt
        return body


async def connect_endpoints(urls: Sequence[str], tokenizer_dir,
                            timeout_s: float | None = 600.0) -> list[OpenAIHttpEngine]:
    """One engine per server URL (`serve --engine openai --url ...`), all with the tokenizer
    of ``tokenizer_dir``, the served model's own; ``timeout_s`` as in ``connect``."""
    from helium_trt.engine.tokenizer import HFTokenizer

    tokenizer = HFTokenizer.from_dir(tokenizer_dir)
    return [await OpenAIHttpEngine.connect(url, tokenizer, timeout_s=timeout_s) for url in urls]


def parse_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return Endpoint(parts.hostname or "127.0.0.1", parts.port or 80)


def _failed(request: EngineRequest, error: str | None, reason: str = "error") -> RequestResult:
    n = len(request.prompt_token_ids)
    return RequestResult(request.request_id, (), "", n, 0, 0, reason, error)
