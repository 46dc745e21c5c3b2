"""Small helpers for driving an EmbeddedEngine from synchronous tests."""

from __future__ import annotations

import asyncio

from helium_trt.engine.base import EngineRequest, RequestResult, SamplingConfig, TokenDelta


def request(request_id: str, prompt: list[int], **sampling) -> EngineRequest:
    return EngineRequest(request_id, tuple(prompt), SamplingConfig(**sampling))


async def collect(engine, req: EngineRequest) -> tuple[list[TokenDelta], RequestResult]:
    deltas, result = [], None
    async for item in engine.generate(req):
        if isinstance(item, RequestResult):
            result = item
        else:
            deltas.append(item)
    return deltas, result


def run_all(engine, requests: list[EngineRequest]) -> list[RequestResult]:
    async def main():
        return await asyncio.gather(*(collect(engine, r) for r in requests))

    return [result for _, result in asyncio.run(main())]
