"""merge_identical_ops: CSE with the deterministic / never-merge exceptions."""

from plan_reference import evaluate

from helium_trt.optimizer import OptimizeContext
from helium_trt.optimizer.rules import MergeIdenticalOps
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    FormatOp, GenerationConfig, InputOp, LlmOp, OutputOp, Ref, ToolCallOp,
)

CTX = OptimizeContext()
SAMPLED = GenerationConfig(temperature=0.8)
SEEDED = GenerationConfig(temperature=0.8, seed=7)


def _pair(config=GenerationConfig()):
    return Plan((
        InputOp("q", column="q"),
        FormatOp("p1", template=("Q: ", Ref("q"))), FormatOp("p2", template=("Q: ", Ref("q"))),
        LlmOp("a", prompt="p1", config=config), LlmOp("b", prompt="p2", config=config),
        FormatOp("j", template=(Ref("a"), " vs ", Ref("b"))),
        OutputOp("out", input="j", name="out"),
    ), rows=({"q": "x"}, {"q": "y"}))


def test_identical_chain_merges_in_one_pass():
    after = MergeIdenticalOps().apply(_pair(), CTX)
    assert [op.id for op in after.ops] == ["q", "p1", "a", "j", "out"]
    assert after.by_id["j"].template == (Ref("a"), " vs ", Ref("a"))


def test_seeded_sampling_merges():
    after = MergeIdenticalOps().apply(_pair(SEEDED), CTX)
    assert "b" not in after.by_id


def test_unseeded_sampling_never_merges():
    after = MergeIdenticalOps().apply(_pair(SAMPLED), CTX)
    assert {"a", "b"} <= set(after.by_id)
    assert "p2" not in after.by_id  # the identical prompt formats still merge
    assert after.by_id["b"].prompt == "p1"


def test_different_config_or_inputs_do_not_merge():
    plan = Plan((InputOp("q"), FormatOp("p", template=("Q: ", Ref("q"))),
                 LlmOp("a", prompt="p", config=GenerationConfig(max_tokens=8)),
                 LlmOp("b", prompt="p", config=GenerationConfig(max_tokens=9)),
                 FormatOp("j", template=(Ref("a"), Ref("b"))), OutputOp("o", input="j")))
    assert MergeIdenticalOps().apply(plan, CTX) is plan


def test_inputs_of_different_columns_tool_calls_and_outputs_never_merge():
    plan = Plan((InputOp("x", column="x"), InputOp("y", column="y"), InputOp("x2", column="x"),
                 ToolCallOp("t1", name="search", args=(("q", "x"),)),
                 ToolCallOp("t2", name="search", args=(("q", "x2"),)),
                 FormatOp("j", template=(Ref("y"), Ref("t1"), Ref("t2"))),
                 OutputOp("o1", input="j"), OutputOp("o2", input="j")))
    after = MergeIdenticalOps().apply(plan, CTX)
    assert [op.id for op in after.ops] == ["x", "y", "t1", "t2", "j", "o1", "o2"]
    assert after.by_id["t2"].args == (("q", "x"),)  # same column: x2 merged into x


def test_merged_plan_computes_the_same_outputs_with_fewer_calls():
    before = _pair()
    after = MergeIdenticalOps().apply(before, CTX)
    (out_b, calls_b), (out_a, calls_a) = evaluate(before), evaluate(after)
    assert out_b == out_a
    assert (calls_b, calls_a) == (4, 2)
