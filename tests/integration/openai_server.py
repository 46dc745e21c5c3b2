"""A small real OpenAI-compatible completions server for tests, on 127.0.0.1, backed by the
embedded engine: ``GET /v1/models`` and ``POST /v1/completions`` with token-id prompts, streamed
(server-sent events, chunked) or not, usage with cached tokens. A client that disconnects
mid-stream gets its engine request cancelled, as vLLM does. No vLLM can run in CI; this serves
the same protocol from a real engine.
"""

from __future__ import annotations

import asyncio
import json
import threading

from helium_trt.engine.base import EngineRequest, RequestResult, SamplingConfig
from helium_trt.errors import HeliumError


class OpenAIServer:
    """``with OpenAIServer(engine) as url:`` serves ``engine`` on a thread of its own.

    ``token_delay_s`` pauses before each streamed piece (to watch streaming happen);
    ``aborted`` lists the request ids whose client went away before the end.
    """

    def __init__(self, engine, model: str = "tiny", token_delay_s: float = 0.0):
        self.engine, self.model, self.token_delay_s = engine, model, token_delay_s
        self.aborted: list[str] = []
        self.num_requests = 0
        self.prompts: list[tuple[int, ...]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None
        self._ids = 0

    def __enter__(self) -> str:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result()
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        async def stop():
            self._server.close()
            await self.engine.close()
        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader, writer) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            method, path = head.split(" ", 2)[:2]
            length = next((int(line.split(":")[1]) for line in head.split("\r\n")
                           if line.lower().startswith("content-length:")), 0)
            body = json.loads(await reader.readexactly(length)) if length else {}
            if method == "GET" and path == "/v1/models":
                await _send_json(writer, 200, {"object": "list", "data": [
                    {"id": self.model, "object": "model",
                     "max_model_len": self.engine.info.max_model_len}]})
            elif method == "POST" and path == "/v1/completions":
                await self._complete(reader, writer, body)
            else:
                await _send_json(writer, 404, {"error": {"message": f"no route {path}"}})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _complete(self, reader, writer, body: dict) -> None:
        self._ids += 1
        self.num_requests += 1
        rid = f"srv-{self._ids}"
        self.prompts.append(tuple(body["prompt"]))
        request = EngineRequest(rid, tuple(body["prompt"]), SamplingConfig(
            max_tokens=body.get("max_tokens", 16), temperature=body.get("temperature", 0.0),
            top_p=body.get("top_p", 1.0), top_k=body.get("top_k", 0), seed=body.get("seed"),
            stop_strings=tuple(body.get("stop") or ()), ignore_eos=body.get("ignore_eos", False)))
        try:
            stream = self.engine.generate(request)
        except HeliumError as exc:
            await _send_json(writer, 400, {"error": {"message": str(exc)}})
            return
        if not body.get("stream"):
            result = [item async for item in stream][-1]
            await _send_json(writer, 200, _completion(result, self.model, text=result.text))
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        gone = asyncio.ensure_future(reader.read(1))  # b"" once the client closes
        finished = False
        try:
            finished = await self._stream(writer, stream, gone, body)
        except ConnectionError:
            pass
        finally:
            gone.cancel()
            if not finished:  # the client went away: stopping the stream cancels the request
                self.aborted.append(rid)
                await stream.aclose()

    async def _stream(self, writer, stream, gone, body) -> bool:
        """Stream the reply; False when the client went away first."""
        include_usage = (body.get("stream_options") or {}).get("include_usage")
        async for item in stream:
            if gone.done():
                return False
            if isinstance(item, RequestResult):
                await _send_event(writer, _completion(item, self.model, text="", usage=False))
                if include_usage:
                    await _send_event(writer, {**_completion(item, self.model), "choices": []})
                await _send_event(writer, "[DONE]")
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return True
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            await _send_event(writer, {"object": "text_completion", "model": self.model,
                                       "choices": [{"index": 0, "text": item.text,
                                                    "finish_reason": None}]})
        return True


def _completion(result: RequestResult, model: str, text: str | None = None,
                usage: bool = True) -> dict:
    reply = {"object": "text_completion", "model": model, "choices": [{
        "index": 0, "text": result.text if text is None else text,
        "finish_reason": "length" if result.finish_reason == "length" else "stop"}]}
    if usage:
        reply["usage"] = {"prompt_tokens": result.num_prompt_tokens,
                          "completion_tokens": len(result.output_token_ids),
                          "prompt_tokens_details": {"cached_tokens": result.num_cached_tokens}}
    return reply


async def _send_event(writer, payload) -> None:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    event = f"data: {data}\n\n".encode()
    writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
    await writer.drain()


async def _send_json(writer, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    await writer.drain()
