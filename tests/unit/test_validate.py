"""Validation: every error issue 2 lists, each naming the operator id and field."""

import pytest

from helium_trt.errors import InvalidWorkflowError
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    ConstantOp, FormatOp, GenerationConfig, InputOp, LlmOp, LoopOp, MapOp, Message, OutputOp,
    Ref,
)
from helium_trt.plan.validate import validate


def _base(*extra, llm=None):
    return (InputOp("q", column="q"), FormatOp("p", template=("Q: ", Ref("q"))),
            llm or LlmOp("a", prompt="p"), *extra, OutputOp("out", input="a"))


def _error(ops, rows=None) -> InvalidWorkflowError:
    with pytest.raises(InvalidWorkflowError) as exc:
        validate(Plan(tuple(ops)), rows=rows)
    return exc.value


def _assert_names(err, op_id, field):
    assert err.op_id == op_id and err.field == field
    assert repr(op_id) in str(err) and repr(field) in str(err)


def test_valid_plan_passes():
    validate(Plan(_base()), rows=({"q": "x"},))


def test_duplicate_ids():
    _assert_names(_error(_base(ConstantOp("p", text="again"))), "p", "id")


def test_dangling_reference():
    _assert_names(_error(_base(OutputOp("o2", input="nope"))), "o2", "input")


def test_cycle_outside_a_loop():
    ops = (InputOp("q"), FormatOp("x", template=(Ref("y"),)), FormatOp("y", template=(Ref("x"),)),
           OutputOp("out", input="x"))
    err = _error(ops)
    assert "cycle" in str(err) and err.op_id in {"x", "y"} and err.field == "inputs"


def test_unbounded_loop():
    loop = LoopOp("L", init="a", state="s", result="r", max_iterations=0,
                  body=(LlmOp("r", prompt="s"),))
    _assert_names(_error(_base(loop)), "L", "max_iterations")


def test_llm_prompt_not_text_or_messages():
    # a conversation sent to a raw-completion call
    ops = (InputOp("q"), FormatOp("c", messages=(Message("user", (Ref("q"),)),)),
           LlmOp("a", prompt="c", mode="generate"), OutputOp("out", input="a"))
    _assert_names(_error(ops), "a", "prompt")
    # an output operator as a prompt (yields no value)
    ops = (InputOp("q"), OutputOp("o1", input="q"), LlmOp("a", prompt="o1"),
           OutputOp("out", input="a"))
    _assert_names(_error(ops), "a", "prompt")


def test_rows_missing_an_input():
    err = _error(_base(), rows=({"q": "x"}, {"other": "y"}))
    _assert_names(err, "q", "rows[1].q")


@pytest.mark.parametrize("config, field", [
    (GenerationConfig(max_tokens=0), "config.max_tokens"),
    (GenerationConfig(temperature=-0.1), "config.temperature"),
    (GenerationConfig(top_p=0.0), "config.top_p"),
    (GenerationConfig(top_p=1.5), "config.top_p"),
    (GenerationConfig(top_k=-1), "config.top_k"),
    (GenerationConfig(stop=("",)), "config.stop"),
])
def test_bad_generation_settings(config, field):
    _assert_names(_error(_base(llm=LlmOp("a", prompt="p", config=config))), "a", field)


def test_empty_workflow():
    err = _error(())
    assert err.field == "ops" and "no operators" in str(err)


def test_outputs_referring_to_nothing():
    _assert_names(_error(_base(OutputOp("o2", input=""))), "o2", "input")
    _assert_names(_error(_base(OutputOp("o3", input="ghost"))), "o3", "input")


def test_no_output_at_all():
    ops = (InputOp("q"), MapOp("m", list_id="q", template=("x",)))
    assert "no output" in str(_error(ops))
