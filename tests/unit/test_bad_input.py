"""Bad requests are refused with errors naming the field, never a crash: corrupt protobuf bytes,
out-of-range enums, non-finite numbers, deep format chains, templates that expand exponentially."""

import pytest
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from helium_trt.api.convert import plan_from_proto, rows_from_proto, rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, workflow_pb2
from helium_trt.api.wire import parse_message
from helium_trt.errors import InvalidWorkflowError, ResourceExhaustedError
from helium_trt.optimizer import optimize
from helium_trt.optimizer.plan_values import RowValues, static_text
from helium_trt.plan.chat import CHATML
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import ConstantOp, FormatOp, InputOp, LlmOp, OutputOp, Ref


def _request() -> service_pb2.RunRequest:
    workflow = json_format.ParseDict({"ops": [
        {"id": "q", "input": {}}, {"id": "p", "format": {"template": "Q: {q}"}},
        {"id": "a", "llm": {"prompt": "p"}}, {"id": "o", "output": {"input": "a"}}]},
        workflow_pb2.Workflow())
    return service_pb2.RunRequest(workflow=workflow, rows=rows_to_proto([{"q": "hi"}]))


def _field_of(data: bytes) -> str:
    with pytest.raises(InvalidWorkflowError) as info:
        parse_message(data, service_pb2.RunRequest)
    return info.value.field


def test_corrupt_bytes_name_the_field_at_fault():
    good = _request().SerializeToString()
    assert parse_message(good, service_pb2.RunRequest) == _request()
    assert _field_of(good[:-3]) == "rows[0]"
    assert _field_of(good.replace(b"Q: ", b"Q:\xff")) == "workflow.ops[1].format.template"
    assert _field_of(b"\x00\x01") == "#0"


def test_nesting_past_the_decoder_depth_names_the_field():
    request, row = _request(), Struct()
    value = row.fields["q"]
    for _ in range(150):
        value = value.list_value.values.add()
    value.string_value = "x"
    request.rows[0].CopyFrom(row)
    field = _field_of(request.SerializeToString())
    assert field.startswith("rows[0].fields[0].value.list_value") and len(field) < 200


@pytest.mark.parametrize("path, value, field", [
    (("format", "messages", "role"), 77, "messages[0].role"),
    (("llm", "mode"), 99, "mode"),
    (("switch_op", "match"), -1, "match"),
])
def test_enum_values_out_of_range_name_the_field(path, value, field):
    op = workflow_pb2.Operator(id="x")
    message = getattr(op, path[0])
    if path[1] == "messages":
        message = message.messages.add()
    else:
        message.SetInParent()
    setattr(message, path[-1], value)
    with pytest.raises(InvalidWorkflowError) as info:
        plan_from_proto(workflow_pb2.Workflow(ops=[op]))
    assert (info.value.op_id, info.value.field) == ("x", field)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_numbers_in_rows_name_row_and_column(bad):
    with pytest.raises(InvalidWorkflowError) as info:
        rows_from_proto(rows_to_proto([{"q": "ok"}, {"q": "ok", "n": ["x", bad]}]))
    assert info.value.field == "rows[1].n[1]"


def test_rows_convert_like_the_json_mapping():
    rows = [{"a": 3, "b": 2.5, "c": None, "d": True, "e": ["x", 1], "f": {"g": ["h"]}}]
    assert rows_from_proto(rows_to_proto(rows)) == tuple(
        json_format.MessageToDict(r) for r in rows_to_proto(rows))


def _chain(n: int) -> Plan:
    ops = [InputOp("q", column="q"), ConstantOp("c", text="C"),
           FormatOp("f0", template=("x ", Ref("q"), Ref("c")))]
    ops += [FormatOp(f"f{i}", template=(Ref(f"f{i - 1}"), ".")) for i in range(1, n)]
    ops += [LlmOp("a", prompt=f"f{n - 1}"), OutputOp("o", input="a")]
    return Plan(tuple(ops), rows=({"q": "hi"},))


def test_a_chain_of_2000_formats_plans_without_recursion():
    plan = _chain(2000)
    assert RowValues(plan, {"q": "hi"}, CHATML).text_of("f1999") == "x hiC" + "." * 1999
    assert static_text(plan, "f1999") is None  # reads a row
    after = optimize(plan).plan
    assert "a" in after.by_id


@pytest.mark.parametrize("base", [ConstantOp("b", text="ab"), InputOp("b", column="b")])
def test_a_template_expanding_exponentially_is_refused_before_it_is_built(base):
    ops = [base, FormatOp("f0", template=(Ref("b"), Ref("b")))]
    ops += [FormatOp(f"f{i}", template=(Ref(f"f{i - 1}"), Ref(f"f{i - 1}"))) for i in range(1, 40)]
    ops += [LlmOp("a", prompt="f39"), OutputOp("o", input="a")]
    with pytest.raises(ResourceExhaustedError, match="operator 'f2[0-9]', field 'template'"):
        optimize(Plan(tuple(ops), rows=({"b": "ab"},)))
