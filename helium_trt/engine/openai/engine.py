"""Engine over an OpenAI-compatible completions server (vLLM with prefix caching, as a peer).

Prompts go as token id lists, so the server computes exactly the tokens helium would; the
reply text is re-encoded with the local tokenizer for token counts. The server's own prefix
cache decides reuse; ``usage.prompt_tokens_details.cached_tokens`` reports it (vLLM needs
``--enable-prompt-tokens-details``).

NOTE: cancel is best effort (the HTTP request is not aborted server-side) and
``num_resident_tokens`` is unknown (0): this engine is a baseline, not a scheduling target.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from typing import AsyncIterator, Sequence
from urllib.parse import urlsplit

from helium_trt.engine.base import (
    EngineHealth, EngineInfo, EngineRequest, RequestResult, RetentionRange, TokenDelta, Tokenizer, WarmResult,
)
from helium_trt.errors import EngineUnavailableError, InvalidRequestError


class OpenAIHttpEngine:
    """Engine protocol over ``POST /v1/completions`` of a local OpenAI-compatible server."""

    def __init__(self, url: str, model: str, tokenizer: Tokenizer, info: EngineInfo,
                 timeout_s: float = 600.0):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._model = model
        self._timeout_s = timeout_s
        self.tokenizer = tokenizer
        self.info = info
        self._cancelled: set[str] = set()

    async def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]:
        body = self._body(request.prompt_token_ids, request)
        try:
            reply = await asyncio.to_thread(self._post, "/v1/completions", body)
        except EngineUnavailableError as exc:
            yield _failed(request, str(exc))
            return
        if request.request_id in self._cancelled:
            self._cancelled.discard(request.request_id)
            yield _failed(request, None, "cancelled")
            return
        choice = reply["choices"][0]
        text = choice.get("text", "")
        output_ids = tuple(self.tokenizer.encode(text))
        cached = _cached_tokens(reply)
        num_prompt = len(request.prompt_token_ids)
        if output_ids:
            yield TokenDelta(request.request_id, output_ids, text)
        yield RequestResult(
            request.request_id, output_ids, text, num_prompt, cached, num_prompt - cached,
            "length" if choice.get("finish_reason") == "length" else "stop")

    async def warm(self, prompt_token_ids: Sequence[int],
                   retention_ranges: Sequence[RetentionRange] = ()) -> WarmResult:
        request = EngineRequest("warm", tuple(prompt_token_ids))
        reply = await asyncio.to_thread(
            self._post, "/v1/completions", self._body(prompt_token_ids, request, max_tokens=1))
        cached = _cached_tokens(reply)
        return WarmResult(len(prompt_token_ids), cached, len(prompt_token_ids) - cached)

    async def cancel(self, request_id: str) -> None:
        self._cancelled.add(request_id)

    def num_resident_tokens(self, token_ids: Sequence[int]) -> int:
        return 0

    def num_free_blocks(self) -> int:
        return self.info.num_blocks

    def health(self) -> EngineHealth:
        """Always healthy: a baseline peer, whose failures show in each call's result."""
        return EngineHealth(True)

    async def close(self) -> None:
        return None

    def _body(self, prompt_ids: Sequence[int], request: EngineRequest,
              max_tokens: int | None = None) -> dict:
        s = request.sampling
        body = {
            "model": self._model, "prompt": list(prompt_ids),
            "max_tokens": max_tokens or s.max_tokens, "temperature": s.temperature,
            "top_p": s.top_p, "stream": False,
        }
        if s.top_k:
            body["top_k"] = s.top_k
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop_strings:
            body["stop"] = list(s.stop_strings)
        if s.stop_token_ids:
            body["stop_token_ids"] = list(s.stop_token_ids)
        return body

    def _post(self, path: str, body: dict) -> dict:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
        except OSError as exc:
            raise EngineUnavailableError(
                f"cannot reach {self._host}:{self._port}: {exc}") from exc
        finally:
            conn.close()
        if resp.status == 400:
            raise InvalidRequestError(payload.decode(errors="replace")[:500])
        if resp.status != 200:
            raise EngineUnavailableError(
                f"{self._host}:{self._port}{path} answered {resp.status}: "
                f"{payload.decode(errors='replace')[:300]}")
        return json.loads(payload)


def _cached_tokens(reply: dict) -> int:
    details = (reply.get("usage") or {}).get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or 0)


def _failed(request: EngineRequest, error: str | None, reason: str = "error") -> RequestResult:
    n = len(request.prompt_token_ids)
    return RequestResult(request.request_id, (), "", n, 0, 0, reason, error)
