"""A minimal HTTP/1.1 client on asyncio streams for OpenAI-compatible servers: one request per
connection, JSON bodies, and replies read as server-sent events (``data: {...}`` until
``data: [DONE]``) or as one JSON document.

NOTE: asyncio streams rather than a thread per request (http.client): a streamed reply hands
each event to the event loop as it arrives, and closing the connection, which is how such
servers learn that a client gave up, is a ``close()`` from any coroutine.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import AsyncIterator

MAX_HEADER_BYTES = 64 << 10
MAX_BODY_BYTES = 64 << 20


class HttpStatusError(Exception):
    """The server answered with a status other than 200; ``body`` is the start of its reply."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def encode_request(endpoint: Endpoint, method: str, path: str, body: dict | None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n"
            f"Accept: application/json, text/event-stream\r\n")
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return (head + "\r\n").encode() + payload


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status code and headers (lower-case names) of a reply."""
    raw = await reader.readuntil(b"\r\n\r\n")
    if len(raw) > MAX_HEADER_BYTES:
        raise ValueError("reply headers too long")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP reply: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The reply body as it arrives: chunked, sized by Content-Length, or up to the close."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            if size > MAX_BODY_BYTES:
                raise ValueError(f"reply chunk of {size} bytes")
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while data := await reader.read(65536):
            yield data


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    parts, size = [], 0
    async for chunk in body_chunks(reader, headers):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ValueError("reply body too long")
        parts.append(chunk)
    return b"".join(parts)


async def sse_events(reader: asyncio.StreamReader) -> AsyncIterator[dict]:
    """Each ``data:`` event of a 200 reply as JSON, up to ``[DONE]`` or the end of the body.

    Raises HttpStatusError for another status (after reading its body), ValueError for a reply
    that is not HTTP or an event that is not JSON.
    """
    status, headers = await read_head(reader)
    if status != 200:
        body = await read_body(reader, headers)
        raise HttpStatusError(status, body.decode(errors="replace")[:500])
    buffer = b""
    async for chunk in body_chunks(reader, headers):
        buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            data = _event_data(event)
            if data == "[DONE]":
                return
            if data:
                yield json.loads(data)
    data = _event_data(buffer)
    if data and data != "[DONE]":
        yield json.loads(data)


async def request_json(endpoint: Endpoint, method: str, path: str, body: dict | None = None,
                       timeout_s: float = 30.0) -> dict:
    """One request whose reply is a JSON document (e.g. GET /v1/models)."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        try:
            writer.write(encode_request(endpoint, method, path, body))
            await writer.drain()
            status, headers = await read_head(reader)
            payload = await read_body(reader, headers)
        finally:
            writer.close()
    if status != 200:
        raise HttpStatusError(status, payload.decode(errors="replace")[:500])
    return json.loads(payload)


def _event_data(event: bytes) -> str:
    """The ``data`` field of one event (several ``data:`` lines join with newlines)."""
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines).decode().strip()
