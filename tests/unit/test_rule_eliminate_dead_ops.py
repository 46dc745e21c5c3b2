"""eliminate_dead_ops: only what outputs depend on survives."""

from plan_reference import evaluate

from helium_trt.optimizer import OptimizeContext
from helium_trt.optimizer.rules import EliminateDeadOps
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import ConstantOp, FormatOp, InputOp, LlmOp, OutputOp, Ref

CTX = OptimizeContext()


def _plan():
    return Plan((
        InputOp("q", column="q"), InputOp("unused_in", column="u"),
        ConstantOp("sys", text="unused system"),
        FormatOp("p", template=("Q: ", Ref("q"))), LlmOp("a", prompt="p"),
        LlmOp("side", prompt="p"), FormatOp("p2", template=(Ref("side"), Ref("unused_in"))),
        LlmOp("side2", prompt="p2"),
        OutputOp("out", input="a", name="out"),
    ), rows=({"q": "x", "u": "y"},))


def test_ops_unreachable_from_outputs_are_dropped():
    after = EliminateDeadOps().apply(_plan(), CTX)
    assert [op.id for op in after.ops] == ["q", "p", "a", "out"]


def test_fully_live_plan_is_returned_unchanged():
    plan = Plan((InputOp("q"), OutputOp("o", input="q")))
    assert EliminateDeadOps().apply(plan, CTX) is plan


def test_dead_op_elimination_keeps_outputs_and_calls():
    # The reference evaluator is demand-driven, like the runtime: a dead LLM op is never called
    # either way; the rule's gain is a smaller plan for the later rules, the TRT and scheduler.
    before = _plan()
    after = EliminateDeadOps().apply(before, CTX)
    (out_b, calls_b), (out_a, calls_a) = evaluate(before), evaluate(after)
    assert out_b == out_a
    assert calls_b == calls_a == 1
    assert len(after.llm_ops) < len(before.llm_ops)
