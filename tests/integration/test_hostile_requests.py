"""Hostile requests against a real `helium-trt serve` (tiny model): a ReDoS row, a huge row, bad
bytes, out-of-range values and requests past the limits are refused or handled quickly, with
INVALID_ARGUMENT / RESOURCE_EXHAUSTED naming the field, while other clients keep being served."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from helium_trt.api.convert import rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc, workflow_pb2
from helium_trt.engine.base import EngineHealth
from helium_trt.server.grpc_service import start_server

from serve_helpers import serve

STATS_LIVENESS_S = 0.2  # the bound for a concurrent Stats call
RUN = "/helium.v1.HeliumService/Run"


@pytest.fixture(scope="module")
def server(long_tiny_model_dir, tmp_path_factory):
    with serve(long_tiny_model_dir, tmp_path_factory.mktemp("hostile"),
               "--kv-cache-blocks", "512") as served:
        yield served.address


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server) as ch:
        yield ch


def _workflow(*ops) -> workflow_pb2.Workflow:
    return json_format.ParseDict({"name": "w", "ops": list(ops)}, workflow_pb2.Workflow())


BASE = ({"id": "q", "input": {}}, {"id": "p", "format": {"template": "Q: {q}"}},
        {"id": "a", "llm": {"prompt": "p", "config": {"max_tokens": 2}}},
        {"id": "o", "output": {"input": "a"}})


def _request(ops=BASE, rows=({"q": "hi"},)) -> service_pb2.RunRequest:
    return service_pb2.RunRequest(workflow=_workflow(*ops), rows=rows_to_proto(list(rows)))


def _switch(pattern: str, input_id: str = "q") -> tuple:
    return (*BASE[:3], {"id": "s", "switch_op": {"input": input_id, "cases": [
        {"value": pattern, "target": "a"}], "default_target": "p"}},
        {"id": "o", "output": {"input": "s"}})


class _StatsProbe:
    """Calls Stats on its own channel in a loop while a request is in flight; ``worst_s`` is
    the slowest answer."""

    def __init__(self, address: str) -> None:
        self._address, self._stop = address, threading.Event()
        self.latencies: list[float] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        while not self.latencies:  # the channel is connected and answering
            time.sleep(0.005)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        with grpc.insecure_channel(self._address) as ch:
            stub = service_pb2_grpc.HeliumServiceStub(ch)
            while not self._stop.is_set():
                start = time.perf_counter()
                stub.Stats(service_pb2.StatsRequest(), timeout=30)
                self.latencies.append(time.perf_counter() - start)
                time.sleep(0.01)

    @property
    def worst_s(self) -> float:
        return max(self.latencies)


def _outcome(call):
    """(status code, details, events) of a finished call."""
    try:
        events = call()
        return grpc.StatusCode.OK, "", events
    except grpc.RpcError as exc:
        return exc.code(), exc.details(), []


def _while_probing(server, call):
    with _StatsProbe(server) as probe:
        start = time.perf_counter()
        outcome = _outcome(call)
        elapsed = time.perf_counter() - start
        time.sleep(0.05)  # a few probes after the call too
    return outcome, elapsed, probe


def test_redos_row_is_matched_in_linear_time_while_stats_answers(server, channel):
    stub = service_pb2_grpc.HeliumServiceStub(channel)
    rows = [{"q": "a" * n + "!"} for n in (29, 40, 100_000)]  # (a+)+$ backtracks 2^n with re
    (code, _, events), elapsed, probe = _while_probing(
        server, lambda: list(stub.Run(_request(_switch("(a+)+$"), rows), timeout=60)))
    assert code == grpc.StatusCode.OK and elapsed < 10
    outputs = [e.row_output.outputs["o"] for e in events if e.WhichOneof("event") == "row_output"]
    assert sorted(outputs) == sorted(f"Q: {r['q']}" for r in rows)  # no match: the default
    assert probe.worst_s < STATS_LIVENESS_S, probe.latencies


def test_redos_pattern_decided_at_plan_time_in_explain(server, channel):
    stub = service_pb2_grpc.HeliumServiceStub(channel)
    ops = ({"id": "c", "constant": {"text": "a" * 40 + "!"}}, *_switch("(a+)+$", "c")[:-1],
           {"id": "o", "output": {"input": "s"}})
    (code, _, _), elapsed, probe = _while_probing(
        server, lambda: [stub.Explain(service_pb2.ExplainRequest(request=_request(ops)),
                                      timeout=60)])
    assert code == grpc.StatusCode.OK and elapsed < 10
    assert probe.worst_s < STATS_LIVENESS_S, probe.latencies


@pytest.mark.parametrize("pattern, field", [(r"(a)\1", "cases[0].value"),
                                            (r"a(?=b)", "cases[0].value")])
def test_pattern_re2_cannot_run_is_refused_naming_the_field(channel, pattern, field):
    stub = service_pb2_grpc.HeliumServiceStub(channel)
    for call in (lambda r: list(stub.Run(r)),
                 lambda r: stub.Explain(service_pb2.ExplainRequest(request=r))):
        with pytest.raises(grpc.RpcError) as info:
            call(_request(_switch(pattern)))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"operator 's', field '{field}'" in info.value.details()


def test_huge_row_is_refused_before_any_work_while_stats_answers(server, channel):
    stub = service_pb2_grpc.HeliumServiceStub(channel)
    request = _request(rows=({"q": "x" * (10 << 20)},))
    (code, details, _), elapsed, probe = _while_probing(
        server, lambda: list(stub.Run(request, timeout=60)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "field 'rows[0].q'" in details
    assert elapsed < 5
    assert probe.worst_s < STATS_LIVENESS_S, probe.latencies


def test_large_row_under_the_limit_is_tokenized_off_the_event_loop(server, channel):
    """~0.9 MB (just under --max-value-bytes) is planned and tokenized, twice over: Stats keeps
    answering (on 2 shared cores, tokenizing it on the loop stalled everyone ~1 s)."""
    stub = service_pb2_grpc.HeliumServiceStub(channel)
    request = _request(rows=({"q": "The quarterly revenue rose by 12 percent. " * 21_000},))
    (code, details, events), _, probe = _while_probing(
        server, lambda: list(stub.Run(request, timeout=120)))
    # The prompt is far past the tiny model's window: refused, at plan time or per call.
    errors = [e.error for e in events if e.WhichOneof("event") == "error"]
    assert code != grpc.StatusCode.OK or errors, details
    assert probe.worst_s < STATS_LIVENESS_S, probe.latencies


def _deep_row_request() -> service_pb2.RunRequest:
    request, row = _request(), Struct()
    value = row.fields["q"]
    for _ in range(150):
        value = value.list_value.values.add()
    value.string_value = "x"
    request.rows[0].CopyFrom(row)
    return request


def _set(path: str, value):
    """A request whose field at ``path`` (op index, then attributes) is set to ``value``."""
    def build():
        request = _request(_switch("ok"))
        op_index, *attrs = path.split(".")
        target = request.workflow.ops[int(op_index)]
        for attr in attrs[:-1]:
            target = target.messages.add() if attr == "messages" else getattr(target, attr)
        setattr(target, attrs[-1], value)
        return request.SerializeToString()
    return build


def _chat_role(role: int):
    def build():
        request = _request()
        request.workflow.ops[1].format.template = ""
        message = request.workflow.ops[1].format.messages.add(template="{q}")
        message.role = role
        return request.SerializeToString()
    return build


def _good() -> bytes:
    return _request().SerializeToString()


BAD_BYTES = {  # name -> (request bytes, the field the details must name)
    "truncated": (lambda: _good()[:-4], "rows[0]"),
    "invalid utf-8": (lambda: _good().replace(b"Q: ", b"Q:\xff"),
                      "workflow.ops[1].format.template"),
    "nested past the decoder's depth": (lambda: _deep_row_request().SerializeToString(),
                                        "rows[0].fields[0].value"),
    "role 77": (_chat_role(77), "messages[0].role"),
    "mode 99": (_set("2.llm.mode", 99), "mode"),
    "match -1": (_set("3.switch_op.match", -1), "match"),
    "temperature nan": (_set("2.llm.config.temperature", float("nan")), "config.temperature"),
    "temperature inf": (_set("2.llm.config.temperature", float("inf")), "config.temperature"),
    "top_p nan": (_set("2.llm.config.top_p", float("nan")), "config.top_p"),
    "top_p inf": (_set("2.llm.config.top_p", float("inf")), "config.top_p"),
    "infinity in a row": (lambda: _request(rows=({"q": "x", "n": float("inf")},))
                          .SerializeToString(), "rows[0].n"),
    "NaN in a row list": (lambda: _request(rows=({"q": ["x", float("nan")]},))
                          .SerializeToString(), "rows[0].q[1]"),
}


@pytest.mark.parametrize("name", list(BAD_BYTES))
def test_bad_bytes_are_invalid_argument_naming_the_field(channel, name):
    """Run gets the bytes as they are; Explain gets them inside its ``request`` field."""
    build, field = BAD_BYTES[name]
    data = build()
    run = channel.unary_stream(RUN)
    explain = channel.unary_unary("/helium.v1.HeliumService/Explain")
    for call, prefix in ((lambda: list(run(data, timeout=30)), "field '"),
                         (lambda: explain(b"\x0a" + _varint(len(data)) + data, timeout=30),
                          "")):
        with pytest.raises(grpc.RpcError) as info:
            call()
        details = info.value.details()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
        assert prefix + field in details and "field '" in details, details
        assert "Error" not in details and "Exception" not in details  # no Python names


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_a_chain_of_400_formats_runs(channel):
    ops = [{"id": "q", "input": {}}, {"id": "f0", "format": {"template": "x {q}"}}]
    ops += [{"id": f"f{i}", "format": {"template": f"{{f{i - 1}}}."}} for i in range(1, 400)]
    ops += [{"id": "o", "output": {"input": "f399"}}]
    events = list(service_pb2_grpc.HeliumServiceStub(channel).Run(_request(ops), timeout=60))
    outputs = [e.row_output.outputs["o"] for e in events if e.WhichOneof("event") == "row_output"]
    assert outputs == ["x hi" + "." * 399]


def test_a_list_fanning_out_past_max_calls_is_refused_before_any_work(channel):
    ops = ({"id": "q", "input": {}}, {"id": "m", "map": {"list": "q", "template": "say {item}"}},
           {"id": "a", "llm": {"prompt": "m", "config": {"max_tokens": 1}}},
           {"id": "o", "output": {"input": "a"}})
    stub = service_pb2_grpc.HeliumServiceStub(channel)
    before = stub.Stats(service_pb2.StatsRequest())
    start = time.perf_counter()
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Run(_request(ops, rows=({"q": ["x"] * 5000},)), timeout=60))
    assert time.perf_counter() - start < 5
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "5,000 LLM calls" in info.value.details() and "4,096" in info.value.details()
    assert stub.Stats(service_pb2.StatsRequest()).num_llm_calls == before.num_llm_calls


def test_a_format_expanding_exponentially_is_refused(channel):
    ops = [{"id": "q", "input": {}}, {"id": "f0", "format": {"template": "{q}{q}"}}]
    ops += [{"id": f"f{i}", "format": {"template": f"{{f{i - 1}}}{{f{i - 1}}}"}}
            for i in range(1, 40)]
    ops += [{"id": "o", "output": {"input": "f39"}}]
    with pytest.raises(grpc.RpcError) as info:
        list(service_pb2_grpc.HeliumServiceStub(channel).Run(_request(ops), timeout=60))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "field 'template'" in info.value.details()


class _BrokenCore:
    """A core whose every method fails with an error that is not the package's own."""

    def run(self, request, tools):
        raise KeyError("boom")

    async def explain(self, request):
        raise ZeroDivisionError

    async def warm(self, request):
        raise RuntimeError("boom")

    def stats(self):
        raise AttributeError("boom")

    def health(self) -> EngineHealth:
        return EngineHealth(True)


def test_an_unexpected_error_is_internal_never_unknown(caplog):
    async def scenario():
        server, port = await start_server(_BrokenCore(), "127.0.0.1:0")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = service_pb2_grpc.HeliumServiceStub(ch)
                calls = [lambda: _drain(stub.Run(_request())),
                         lambda: stub.Explain(service_pb2.ExplainRequest(request=_request())),
                         lambda: stub.Warm(service_pb2.WarmRequest(workflow=_request().workflow)),
                         lambda: stub.Stats(service_pb2.StatsRequest())]
                codes = []
                for call in calls:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call()
                    codes.append((info.value.code(), info.value.details()))
                return codes
        finally:
            await server.stop(None)

    codes = asyncio.run(scenario())
    assert {code for code, _ in codes} == {grpc.StatusCode.INTERNAL}
    assert all("internal error in" in details and "boom" not in details for _, details in codes)
    assert "HeliumService.Run failed" in caplog.text


async def _drain(call):
    return [event async for event in call]


# ---- workflow files given to the CLI ---------------------------------------------------------

_ONE_CALL = """workflow:
  ops:
  - {id: q, input: {}}
  - id: p
    format:
      messages:
      - {role: ROLE, template: "hi {q}"}
  - {id: a, llm: {prompt: p, config: {maxTokens: 2}}}
  - {id: o, output: {input: a}}
rows:
- {q: x}
"""


def _laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "workflow:\n  name: laughs\n" + "".join(f"  {line}\n" for line in lines)


BAD_FILES = {  # name -> (file name, content, what the one-line error names)
    "role -1": ("w.yaml", _ONE_CALL.replace("ROLE", "-1"), "messages[0].role"),
    "role .inf": ("w.yaml", _ONE_CALL.replace("ROLE", ".inf"), "workflow.ops[1].format"),
    "NaN in a row": ("w.yaml", _ONE_CALL.replace("{q: x}", "{q: x, n: .nan}"), "rows[0].n"),
    "not UTF-8": ("w.yaml", _ONE_CALL.replace("ROLE", "ROLE_USER").replace("hi", "h\xe9")
                  .encode("latin-1"), "not UTF-8"),
    "5,000-deep YAML list": ("w.yaml", "workflow: {ops: " + "[" * 5000 + "]" * 5000 + "}\n",
                             "nested more than 100"),
    "5,000-deep JSON list": ("w.json", '{"workflow": {"ops": ' + "[" * 5000 + "]" * 5000 + "}}",
                             "nested too deeply"),
    "billion laughs": ("w.yaml", _laughs(), "aliases"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
@pytest.mark.parametrize("command", ["explain", "run"])
def test_bad_workflow_files_get_a_one_line_error(tmp_path, capsys, long_tiny_model_dir,
                                                  command, name):
    from helium_trt.server.cli import main

    file_name, content, named = BAD_FILES[name]
    path = tmp_path / file_name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    start = time.perf_counter()
    code = main([command, str(path)] + (["--model", str(long_tiny_model_dir), "--quiet"]
                                         if command == "run" else []))
    assert time.perf_counter() - start < 5  # the 400-byte alias file: 0.3 s
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and named in err, err
    assert "Traceback" not in err
