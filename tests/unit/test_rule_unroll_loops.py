"""unroll_loops: iteration copies, renamed references, {iteration}, stop_regex guards on the
newest iteration's output (stop_on), equivalence with iterating one by one."""

from dataclasses import replace

from plan_reference import evaluate

from helium_trt.optimizer import OptimizeContext
from helium_trt.optimizer.rules import UnrollLoops
from helium_trt.plan.graph import Plan
import pytest

from helium_trt.errors import InvalidWorkflowError
from helium_trt.plan.ops import (
    ConstantOp, FormatOp, InputOp, LlmOp, LoopOp, OutputOp, Ref, SwitchCase, SwitchOp,
)
from helium_trt.plan.validate import validate

CTX = OptimizeContext()


def _plan(n=3, stop=None):
    body = (FormatOp("p", template=("Improve: ", Ref("s"), " using ", Ref("q"))),
            LlmOp("r", prompt="p"))
    return Plan((InputOp("q", column="q"), LlmOp("draft", prompt="q"),
                 LoopOp("L", init="draft", state="s", result="r", max_iterations=n, body=body,
                        stop_regex=stop),
                 OutputOp("out", input="L", name="out")), rows=({"q": "a"}, {"q": "b"}))


def test_unrolls_into_numbered_copies_and_renames_consumers():
    after = UnrollLoops().apply(_plan(3), CTX)
    ids = [op.id for op in after.ops]
    assert ids == ["q", "draft", "L.0.p", "L.0.r", "L.1.p", "L.1.r", "L.2.p", "L.2.r", "out"]
    by = after.by_id
    assert by["L.0.p"].template == ("Improve: ", Ref("draft"), " using ", Ref("q"))
    assert by["L.1.p"].template == ("Improve: ", Ref("L.0.r"), " using ", Ref("q"))
    assert by["L.2.r"].prompt == "L.2.p"
    assert by["out"].input == "L.2.r"
    validate(after)


def test_stop_regex_guards_each_later_iteration_with_a_pass_through_switch():
    after = UnrollLoops().apply(_plan(3, stop="FINAL"), CTX)
    by = after.by_id
    assert "L.0.next" not in by  # the first iteration always runs: init is never tested
    assert by["L.1.next"] == SwitchOp("L.1.next", input="L.0.r", match="regex",
                                      cases=(SwitchCase("FINAL", "L.0.r"),),
                                      default_target="L.1.r")
    assert by["L.2.p"].template[1] == Ref("L.1.next")
    assert by["L.2.next"].input == by["L.2.next"].cases[0].target == "L.1.next"
    assert by["out"].input == "L.2.next"
    validate(after)


def test_plan_without_loops_is_returned_unchanged():
    plan = Plan((InputOp("q"), OutputOp("o", input="q")))
    assert UnrollLoops().apply(plan, CTX) is plan


def test_unrolled_plan_computes_the_same_outputs():
    before = _plan(3)
    after = UnrollLoops().apply(before, CTX)
    assert evaluate(before) == evaluate(after)
    assert evaluate(after)[1] == 2 * 4  # draft + 3 iterations per row


def test_stop_regex_equivalence_when_the_state_matches_early():
    def llm(prompt):  # the first improvement says FINAL, so later iterations pass through
        return "FINAL answer" if prompt.startswith("Improve") else "first draft"

    before = _plan(4, stop="FINAL")
    after = UnrollLoops().apply(before, CTX)
    out_before, calls_before = evaluate(before, llm=llm)
    out_after, calls_after = evaluate(after, llm=llm)
    assert out_before == out_after == [{"out": "FINAL answer"}] * 2
    assert calls_before == calls_after == 2 * 2  # draft + one iteration per row


def test_a_few_shot_state_that_already_matches_does_not_stop_the_loop():
    plan = _plan(3, stop="FINAL")

    def llm(prompt):
        return "more" if prompt.startswith("Improve") else "FINAL example"

    rows = ({"q": "x"},)
    before, calls_before = evaluate(plan, rows, llm=llm)
    after, calls_after = evaluate(UnrollLoops().apply(plan, CTX), rows, llm=llm)
    assert before == after == [{"out": "more"}]
    assert calls_before == calls_after == 1 + 3  # draft said FINAL, yet all 3 iterations ran


def _react(n=4):
    """A ReAct-like loop: the state is the whole transcript, the stop test the newest step."""
    body = (FormatOp("tp", template=(Ref("s"), "Thought ", Ref("iteration"), ":")),
            LlmOp("t", prompt="tp"),
            FormatOp("r", template=(Ref("s"), "Thought ", Ref("iteration"), ":", Ref("t"), "\n")))
    return Plan((InputOp("q", column="q"), FormatOp("fs", template=("Example: Finish\n", Ref("q"),
                                                                     "\n")),
                 LoopOp("L", init="fs", state="s", result="r", max_iterations=n, body=body,
                        stop_regex="Finish", stop_on="t"),
                 OutputOp("out", input="L", name="out")), rows=({"q": "a"},))


def _react_llm(prompt):
    return " Finish" if prompt.endswith("Thought 2:") else " think"


def test_iteration_is_a_constant_counted_from_one():
    after = UnrollLoops().apply(_react(3), CTX)
    by = after.by_id
    assert by["L.0.iteration"] == ConstantOp("L.0.iteration", text="1")
    assert by["L.2.iteration"].text == "3"
    assert by["L.1.tp"].template == (Ref("L.0.r"), "Thought ", Ref("L.1.iteration"), ":")
    validate(after)


def test_stop_on_a_body_operator_tests_the_newest_step_not_the_transcript():
    plan = _react(4)
    after = UnrollLoops().apply(plan, CTX)
    by = after.by_id
    assert by["L.1.next"].input == "L.0.t" and by["L.1.tested"].input == "L.0.t"
    assert by["L.2.next"].input == "L.1.tested"
    assert by["L.2.tested"].default_target == "L.2.t"
    before, calls_before = evaluate(plan, llm=_react_llm)
    out_after, calls_after = evaluate(after, llm=_react_llm)
    expected = "Example: Finish\na\nThought 1: think\nThought 2: Finish\n"
    assert before == [{"out": expected}] and out_after == before
    assert calls_before == calls_after == 2


def test_the_loop_stops_through_the_optimizer_too():
    from helium_trt.optimizer import optimize

    out, calls = evaluate(optimize(_react(4)).plan, llm=_react_llm)
    assert calls == 2 and out[0]["out"].endswith("Thought 2: Finish\n")


@pytest.mark.parametrize("change, field", [
    (dict(stop_on="ghost"), "stop_on"),
    (dict(state="iteration"), "state"),
])
def test_bad_loops_name_the_field(change, field):
    plan = _react()
    plan = plan.replace_ops(replace(op, **change) if op.id == "L" else op for op in plan.ops)
    with pytest.raises(InvalidWorkflowError) as err:
        validate(plan)
    assert err.value.op_id == "L" and err.value.field == field


def test_a_body_op_named_iteration_or_an_outer_one_it_would_hide_is_refused():
    plan = _react()
    loop = plan.by_id["L"]
    renamed = replace(loop, body=(*loop.body, ConstantOp("iteration", text="x")))
    with pytest.raises(InvalidWorkflowError, match="reserved"):
        validate(plan.replace_ops(renamed if op.id == "L" else op for op in plan.ops))
    hidden = plan.replace_ops((ConstantOp("iteration", text="x"), *plan.ops))
    with pytest.raises(InvalidWorkflowError, match="rename that operator"):
        validate(hidden)
