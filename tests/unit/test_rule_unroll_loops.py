"""unroll_loops: iteration copies, renamed references, stop_regex guards, equivalence."""

from plan_reference import evaluate

from helium_trt.optimizer import OptimizeContext
from helium_trt.optimizer.rules import UnrollLoops
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    FormatOp, InputOp, LlmOp, LoopOp, OutputOp, Ref, SwitchCase, SwitchOp,
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


def test_stop_regex_guards_each_iteration_with_a_pass_through_switch():
    after = UnrollLoops().apply(_plan(2, stop="FINAL"), CTX)
    by = after.by_id
    assert by["L.0.next"] == SwitchOp("L.0.next", input="draft", match="regex",
                                      cases=(SwitchCase("FINAL", "draft"),),
                                      default_target="L.0.r")
    assert by["L.1.p"].template[1] == Ref("L.0.next")
    assert by["L.1.next"].cases[0].target == "L.0.next"
    assert by["out"].input == "L.1.next"


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
