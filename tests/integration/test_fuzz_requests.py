"""Bounded fuzzing (hypothesis, derandomized for CI): serialized requests sent to a real
`helium-trt serve` (tiny model) and workflow files given to the CLI. No request may get UNKNOWN
or INTERNAL (as a status or a row's error event), and no file may end in a traceback.

Each test runs a fixed number of examples (~10 s together on 2 cores); the same examples every
run, so a failure reproduces.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helium_trt.api.convert import rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, workflow_pb2
from helium_trt.server.cli import main as cli_main

from serve_helpers import serve

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


@pytest.fixture(scope="module")
def server(long_tiny_model_dir, tmp_path_factory):
    with serve(long_tiny_model_dir, tmp_path_factory.mktemp("fuzz"), "--kv-cache-blocks", "512",
               "--max-calls", "64", "--tool-call-timeout", "1") as served:
        yield served


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def _send(channel, data: bytes) -> None:
    """Run ``data`` as a RunRequest; fail on a forbidden status or error event."""
    call = channel.unary_stream("/helium.v1.HeliumService/Run")
    try:
        for raw in call(data, timeout=30):
            event = service_pb2.RunEvent.FromString(raw)
            if event.WhichOneof("event") == "error":
                assert event.error.code != service_pb2.ERROR_CODE_INTERNAL, event.error
    except grpc.RpcError as exc:
        assert exc.code() not in FORBIDDEN, (exc.code(), exc.details())


# ---- seeds: valid requests of every operator kind -----------------------------------------

def _seed(ops, rows) -> bytes:
    workflow = json_format.ParseDict({"name": "seed", "ops": ops}, workflow_pb2.Workflow())
    return service_pb2.RunRequest(workflow=workflow, rows=rows_to_proto(rows)).SerializeToString()


_LLM = {"max_tokens": 2}
SEEDS = [
    _seed([{"id": "q", "input": {}}, {"id": "p", "format": {"template": "Q: {q}"}},
           {"id": "a", "llm": {"prompt": "p", "config": _LLM}},
           {"id": "o", "output": {"input": "a"}}], [{"q": "hi"}]),
    _seed([{"id": "q", "input": {}}, {"id": "p", "format": {"messages": [
        {"role": "ROLE_SYSTEM", "template": "Be brief."},
        {"role": "ROLE_USER", "template": "{q}"}]}},
        {"id": "a", "llm": {"prompt": "p", "config": _LLM, "mode": "LLM_MODE_CHAT"}},
        {"id": "s", "switch_op": {"input": "a", "cases": [{"value": "(?i)yes", "target": "a"}],
                                  "default_target": "q"}},
        {"id": "o", "output": {"input": "s"}}], [{"q": "Is it?"}, {"q": "No"}]),
    _seed([{"id": "d", "input": {}},
           {"id": "m", "map": {"list": "d", "template": "{index}: {item}"}},
           {"id": "a", "llm": {"prompt": "m", "config": _LLM}},
           {"id": "c", "concat": {"inputs": ["a", "d"], "separator": "|"}},
           {"id": "L", "loop": {"init": "c", "state": "s", "result": "r", "max_iterations": 2,
                                "stop_regex": "^done", "body": [
                                    {"id": "rp", "format": {"template": "Fix {s}"}},
                                    {"id": "r", "llm": {"prompt": "rp", "config": _LLM}}]}},
           {"id": "o", "output": {"input": "L"}}], [{"d": ["x", "y"]}]),
]

_MUTATION = st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                      st.integers(0, 1 << 16), st.integers(0, 255))


def _mutate(data: bytes, mutations) -> bytes:
    buf = bytearray(data)
    for kind, position, byte in mutations:
        i = position % (len(buf) + 1)
        if kind == "flip" and i < len(buf):
            buf[i] ^= byte or 1
        elif kind == "insert":
            buf.insert(i, byte)
        elif kind == "delete" and i < len(buf):
            del buf[i]
        elif kind == "truncate":
            del buf[i:]
    return bytes(buf)


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(channel, data):
    _send(channel, data)


@FUZZ
@given(seed=st.sampled_from(SEEDS), mutations=st.lists(_MUTATION, min_size=1, max_size=4))
def test_mutated_valid_requests(channel, seed, mutations):
    _send(channel, _mutate(seed, mutations))


# ---- well-typed messages with arbitrary contents -------------------------------------------
# Mostly sound workflows (references to earlier operators, enums in range, finite numbers),
# each value now and then replaced by a hostile one, so the fuzz reaches planning and running.

NAN, INF = float("nan"), float("inf")


def _mostly(good: list, bad: list):
    return st.sampled_from(good * 6 + bad)


_enum = _mostly([0, 1, 2, 3], [4, 77, -1, -(1 << 31)])
_float = _mostly([0.0, 0.5, 1.0], [NAN, INF, -INF, -1.0, 1e30])
_pattern = _mostly(["ok", "^a", "(?i)yes", "x|y"], ["(a+)+$", r"(a)\1", "(?=x)", "(", "a{1000}"])


def _ref(ids: list[str]):
    return _mostly(ids, ["", "nowhere", "bad id"])


def _template(draw, ids: list[str]) -> str:
    parts = draw(st.lists(st.one_of(st.text(max_size=6), _ref(ids).map(lambda i: "{" + i + "}"),
                                    _mostly(["}}", "{item}"], ["{", "{ }"])),
                          max_size=4))
    return "".join(parts)


def _operator(draw, op_id: str, ids: list[str]) -> workflow_pb2.Operator:
    op = workflow_pb2.Operator(id=op_id)
    kind = draw(st.sampled_from(["constant", "format", "chat", "llm", "llm", "concat", "map",
                                 "switch", "loop", "tool"] * 3 + ["none"]))
    if kind == "constant":
        op.constant.text = draw(st.text(max_size=10))
    elif kind == "format":
        op.format.template = _template(draw, ids)
    elif kind == "chat":
        for _ in range(draw(st.integers(1, 2))):
            history = draw(_mostly([""], ids))
            op.format.messages.add(role=draw(_enum), history=history,
                                   template="" if history else _template(draw, ids))
    elif kind == "llm":
        op.llm.prompt, op.llm.mode = draw(_ref(ids)), draw(_enum)
        op.llm.return_history = draw(st.booleans())
        config = op.llm.config
        config.max_tokens = draw(_mostly([1, 2], [-1, 3]))
        config.temperature, config.top_k = draw(_float), draw(_mostly([0, 2], [-1]))
        if draw(st.booleans()):
            config.top_p = draw(_float)
        if draw(st.booleans()):
            config.seed = draw(st.integers(-5, 5))
        config.stop.extend(draw(st.lists(_mostly(["\n", "."], [""]), max_size=2)))
    elif kind == "concat":
        op.concat.inputs.extend(draw(st.lists(_ref(ids), max_size=3)))
        op.concat.separator = draw(st.text(max_size=3))
    elif kind == "map":
        op.map.list, op.map.template = draw(_ref(ids)), _template(draw, ids + ["item"])
    elif kind == "switch":
        op.switch_op.input, op.switch_op.match = draw(_ref(ids)), draw(_enum)
        for _ in range(draw(st.integers(0, 2))):
            op.switch_op.cases.add(value=draw(_pattern), target=draw(_ref(ids)))
        op.switch_op.default_target = draw(_mostly(ids, [""]))
    elif kind == "loop":
        loop = op.loop
        loop.init, loop.state, loop.result = draw(_ref(ids)), f"{op_id}_s", f"{op_id}_r"
        loop.max_iterations = draw(_mostly([1, 2], [0, -1, 1 << 20]))
        loop.stop_regex = draw(_mostly([""], ["^ok", "(?=x)", "("]))
        loop.body.add(id=f"{op_id}_p").format.template = _template(draw, ids + [loop.state])
        body = loop.body.add(id=loop.result)
        body.llm.prompt, body.llm.config.max_tokens = f"{op_id}_p", 1
    elif kind == "tool":
        op.tool_call.name = draw(_mostly(["search"], [""]))
        op.tool_call.args.update(draw(st.dictionaries(st.sampled_from(["x", "y"]), _ref(ids),
                                                      max_size=2)))
    return op


_row_value = st.one_of(st.text(max_size=20), st.lists(st.text(max_size=5), max_size=3),
                       _float, st.booleans(), st.none(), st.lists(_float, max_size=2))


@st.composite
def _request(draw) -> bytes:
    request = service_pb2.RunRequest()
    ops, ids = request.workflow.ops, ["q", "d"]
    ops.add(id="q").input.column = draw(_mostly(["q"], ["", "missing"]))
    ops.add(id="d").input.column = "d"
    for i in range(draw(st.integers(0, 6))):
        ops.append(_operator(draw, f"n{i}", ids))
        ids.append(f"n{i}")
    ops.add(id="out").output.input = draw(_mostly(ids[-1:], ids + [""]))
    rows = draw(st.lists(st.fixed_dictionaries(
        {"q": _mostly(["hi", "a" * 30 + "!"], [""]), "d": _mostly([["x", "y"], "z"], [[]])},
        optional={"n": _row_value}), min_size=1, max_size=2))
    for row in rows:
        request.rows.add().update(row)
    options = request.options
    options.deadline_ms = draw(_mostly([0], [1, 5000]))
    options.stream_tokens = draw(st.booleans())
    options.optimizations.disable_prompt_cache = draw(st.booleans())
    return request.SerializeToString()


@FUZZ
@given(data=_request())
def test_well_typed_requests_with_arbitrary_contents(channel, data):
    _send(channel, data)
    explain = channel.unary_unary("/helium.v1.HeliumService/Explain")
    try:
        explain(service_pb2.ExplainRequest(request=service_pb2.RunRequest.FromString(data))
                .SerializeToString(), timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() not in FORBIDDEN, (exc.code(), exc.details())


# ---- workflow files for the CLI --------------------------------------------------------------

# The smaller examples: explaining trading.yaml takes ~0.3 s, too long for a fuzz budget.
EXAMPLES = [(ROOT / "examples" / name).read_bytes() for name in ("triage.yaml", "iterative.yaml")]
_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
_structure = st.recursive(
    _json_scalar, lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["workflow", "ops", "rows", "id", "input", "format",
                                         "template", "llm", "prompt", "output", "role", "config",
                                         "options", "name", "messages", "loop", "body"]),
                        inner, max_size=4)),
    max_leaves=20)


def _cli(args) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(args)
    return code, err.getvalue()


def _check_file(suffix: str, content: bytes, server_address: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"workflow{suffix}"
        path.write_bytes(content)
        code, err = _cli(["explain", str(path)])
        assert code in (0, 2) and "Traceback" not in err, err
        if code == 2:
            assert err.count("\n") == 1, err  # one line
        if server_address is not None:
            code, err = _cli(["run", str(path), "--server", server_address, "--quiet"])
            assert code in (0, 1, 2), err
            assert "INTERNAL" not in err and "UNKNOWN" not in err, err


@FUZZ
@given(example=st.sampled_from(EXAMPLES), mutations=st.lists(_MUTATION, min_size=1, max_size=3))
def test_mutated_example_files(example, mutations):
    _check_file(".yaml", _mutate(example, mutations))


@FUZZ
@given(data=_structure, as_json=st.booleans())
def test_arbitrary_structured_files(server, data, as_json):
    if as_json:
        text = json.dumps({"workflow": data} if isinstance(data, list) else data)
    else:
        text = yaml.safe_dump(data, allow_unicode=True)
    _check_file(".json" if as_json else ".yaml", text.encode("utf-8", "surrogatepass"),
                server.address)


def test_the_server_logged_no_traceback(server, channel):
    """Runs last in this module: every request and file run above was answered without one."""
    assert "Traceback" not in server.log()
