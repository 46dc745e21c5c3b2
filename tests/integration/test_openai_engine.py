"""The streaming OpenAI-HTTP engine against a real OpenAI-compatible server on 127.0.0.1 (a small
one in tests/, serving the tiny model from the embedded engine): streamed pieces and time to
first token, cancel closing the request on the server, no prefix leader, placement over two
endpoints, and `serve --engine openai --url ...`."""

import asyncio
import threading
from dataclasses import replace

import pytest
from openai_server import OpenAIServer
from runtime_helpers import collect, make_engine, workflow

from helium_trt.engine.base import EngineRequest, RequestResult, SamplingConfig, TokenDelta
from helium_trt.engine.openai import OpenAIHttpEngine
from helium_trt.engine.tokenizer import HFTokenizer
from helium_trt.errors import EngineUnavailableError, HeliumError, InvalidRequestError
from helium_trt.runtime.options import RunOptions

LIVENESS_S = 30.0


class HeldServer(OpenAIServer):
    """Holds every streamed reply before its first piece (``hold_first``) or after it
    (``hold_rest``) until the test sets the event."""

    def __init__(self, engine, **kwargs):
        super().__init__(engine, **kwargs)
        self.hold_first, self.hold_rest = threading.Event(), threading.Event()
        self.hold_first.set()
        self.hold_rest.set()
        self.num_streaming = 0

    async def _stream(self, writer, stream, gone, body):
        self.num_streaming += 1
        await asyncio.to_thread(self.hold_first.wait, LIVENESS_S)
        return await super()._stream(writer, _after_first(stream, self.hold_rest), gone, body)


async def _after_first(stream, event):
    async for n, item in _enumerate(stream):
        if n == 1:
            await asyncio.to_thread(event.wait, LIVENESS_S)
        yield item


async def _enumerate(stream):
    n = 0
    async for item in stream:
        yield n, item
        n += 1


async def until(condition, timeout_s: float = LIVENESS_S):
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def client(url, model_dir):
    return OpenAIHttpEngine.connect(url, HFTokenizer.from_dir(model_dir))


def request(engine, text="The quick brown fox jumps over the lazy dog.", max_tokens=8):
    return EngineRequest("r1", tuple(engine.tokenizer.encode(text)),
                         SamplingConfig(max_tokens=max_tokens, ignore_eos=True))


def test_replies_stream_and_match_the_engine_with_time_to_first_token(tiny_model_dir):
    server = HeldServer(make_engine(tiny_model_dir))

    async def go(url):
        engine = await client(url, tiny_model_dir)
        reference = make_engine(tiny_model_dir)
        try:
            expected = [i async for i in reference.generate(request(engine))][-1]
            server.hold_rest.clear()
            stream = engine.generate(request(engine))
            first = await anext(stream)
            # The first piece is here while the server still holds the rest of the reply.
            assert isinstance(first, TokenDelta) and first.text
            server.hold_rest.set()
            items = [first] + [i async for i in stream]
            return expected, items, list(engine.timings)
        finally:
            await reference.close()

    with server as url:
        expected, items, timings = asyncio.run(go(url))
    result = items[-1]
    assert isinstance(result, RequestResult) and result.finish_reason == "length"
    assert result.text == expected.text and "".join(i.text for i in items[:-1]) == expected.text
    assert len(items) - 1 == len(expected.output_token_ids)  # one event per token
    [timing] = timings
    assert timing.ttft_ms is not None and timing.ttft_ms <= timing.total_ms


@pytest.mark.parametrize("how", ["cancel", "stop reading"])
def test_cancel_closes_the_request_on_the_server(tiny_model_dir, how):
    server_engine = make_engine(tiny_model_dir)
    server = HeldServer(server_engine)
    server.hold_rest.clear()

    async def go(url):
        engine = await client(url, tiny_model_dir)
        stream = engine.generate(request(engine, max_tokens=32))
        assert isinstance(await anext(stream), TokenDelta)
        if how == "cancel":
            await engine.cancel("r1")
            server.hold_rest.set()
            rest = [i async for i in stream]
            assert rest[-1].finish_reason == "cancelled"
        else:
            await stream.aclose()
            server.hold_rest.set()
        await until(lambda: server.aborted)
        await until(lambda: server_engine.num_held_blocks() == 0)

    with server as url:
        asyncio.run(go(url))
    assert server.aborted == ["srv-1"]


def test_a_server_that_stops_sending_fails_the_call_within_the_timeout(tiny_model_dir):
    """serve --engine-timeout for --engine openai: an idle timeout, the first piece included."""
    server = HeldServer(make_engine(tiny_model_dir))
    server.hold_first.clear()  # the server goes quiet before its first piece

    async def go(url):
        engine = await OpenAIHttpEngine.connect(url, HFTokenizer.from_dir(tiny_model_dir),
                                                timeout_s=1.0)
        started = asyncio.get_running_loop().time()
        try:
            items = [i async for i in engine.generate(request(engine, max_tokens=8))]
        finally:
            server.hold_first.set()
        return items[-1], asyncio.get_running_loop().time() - started

    with server as url:
        result, waited = asyncio.run(go(url))
        assert result.finish_reason == "error" and "TimeoutError" in result.error
        assert url.split("//")[-1] in result.error
    assert waited < 1.0 + LIVENESS_S


def test_bad_requests_and_unreachable_servers(tiny_model_dir):
    async def go(url):
        engine = await client(url, tiny_model_dir)
        too_long = EngineRequest("r2", (1,) * 10, SamplingConfig(max_tokens=10_000))
        with pytest.raises(HeliumError):  # refused here, before anything is sent
            engine.generate(too_long)
        # A client that believes in a longer window: the server refuses (HTTP 400).
        trusting = OpenAIHttpEngine(url, "tiny", engine.tokenizer,
                                    replace(engine.info, max_model_len=1 << 20))
        with pytest.raises(InvalidRequestError, match="refused request 'r2'"):
            [i async for i in trusting.generate(too_long)]
        gone = OpenAIHttpEngine("127.0.0.1:1", "tiny", engine.tokenizer, engine.info)
        with pytest.raises(EngineUnavailableError, match="cannot reach 127.0.0.1:1"):
            await OpenAIHttpEngine.connect("127.0.0.1:1", engine.tokenizer)
        return [i async for i in gone.generate(request(engine))]

    with OpenAIServer(make_engine(tiny_model_dir)) as url:
        [result] = asyncio.run(go(url))
    assert result.finish_reason == "error" and "cannot reach 127.0.0.1:1" in result.error


SYS_A = ("You are a careful assistant. Answer the question briefly and clearly. " * 5).strip()
SYS_B = ("Summarize the following text in one short sentence for a busy reader. " * 5).strip()


def siblings():
    ops = [{"id": "q", "input": {}}]
    for group, sys_text in (("a", SYS_A), ("b", SYS_B)):
        for i in range(3):
            ops += [{"id": f"{group}p{i}", "format": {"template": f"{sys_text} #{i} {{q}}"}},
                    {"id": f"{group}{i}", "llm": {"prompt": f"{group}p{i}",
                                                 "config": {"maxTokens": 4}}},
                    {"id": f"{group}o{i}", "output": {"input": f"{group}{i}"}}]
    return workflow(ops, [{"q": "colors"}])


def test_no_leader_on_one_endpoint_and_calls_follow_residency_over_two(long_tiny_model_dir):
    """On one endpoint (it shares blocks in flight) no prefix leader holds siblings back: all
    six calls are in flight at once. That run leaves the prefixes on endpoint 1 (as this client
    saw it send them); on both endpoints every call of a second run goes there. Outputs as on
    the embedded engine."""
    servers = [HeldServer(make_engine(long_tiny_model_dir)) for _ in range(2)]
    plan = siblings()
    later = siblings().rows[0] | {"q": "shapes"}

    async def go(urls):
        engines = [await client(u, long_tiny_model_dir) for u in urls]
        servers[1].hold_first.clear()
        first = asyncio.ensure_future(collect(plan, engines[1:]))
        await until(lambda: servers[1].num_streaming == 6)
        servers[1].hold_first.set()
        await first
        result = await collect(plan, engines, rows=[later], options=RunOptions(max_inflight=8))
        reference = make_engine(long_tiny_model_dir)
        try:
            return (result, await collect(plan, [reference], rows=[later]),
                    [s.num_streaming for s in servers])
        finally:
            await reference.close()

    with servers[0] as url0, servers[1] as url1:
        result, reference, calls = asyncio.run(go([url0, url1]))
    assert not result.errors and result.outputs == reference.outputs
    assert calls == [0, 12]


def test_serve_engine_openai_runs_a_workflow_over_two_servers(long_tiny_model_dir, tmp_path):
    """`helium-trt serve --engine openai --url A --url B`: a real gRPC server whose two workers
    are OpenAI-compatible servers; its outputs are the embedded engine's."""
    import grpc
    from google.protobuf import json_format
    from runtime_helpers import outputs_in_process
    from serve_helpers import serve

    from helium_trt.api.convert import rows_to_proto
    from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc, workflow_pb2

    ops = [{"id": "q", "input": {}}]
    for i in range(3):
        ops += [{"id": f"p{i}", "format": {"template": SYS_A + f" #{i} {{q}}"}},
                {"id": f"e{i}", "llm": {"prompt": f"p{i}", "config": {"max_tokens": 4}}},
                {"id": f"o{i}", "output": {"input": f"e{i}"}}]
    request = service_pb2.RunRequest(
        workflow=json_format.ParseDict({"name": "three", "ops": ops}, workflow_pb2.Workflow()),
        rows=rows_to_proto([{"q": "colors"}, {"q": "shapes"}]))
    servers = [OpenAIServer(make_engine(long_tiny_model_dir)) for _ in range(2)]
    with servers[0] as url0, servers[1] as url1, \
            serve(long_tiny_model_dir, tmp_path, "--engine", "openai", "--url", url0,
                  "--url", url1) as served:
        with grpc.insecure_channel(served.address) as channel:
            events = list(service_pb2_grpc.HeliumServiceStub(channel).Run(request, timeout=120))
    rows = {e.row_output.row: dict(e.row_output.outputs) for e in events
            if e.WhichOneof("event") == "row_output"}
    assert rows == outputs_in_process(long_tiny_model_dir, request)
    assert servers[0].num_requests + servers[1].num_requests == 6
    assert "openai engine, 2 worker(s)" in served.log()
