"""TRT: a static prefix shared on an edge that continues past a placeholder is still reported."""

from helium_trt.cache.trt import build_trt
from helium_trt.plan.chat import CHATML
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import FormatOp, InputOp, LlmOp, OutputOp, Ref


def test_shared_static_head_before_a_common_placeholder():
    # both prompts are "SYS {doc}" + a different tail: the tree branches after {doc}
    ops = [InputOp("doc")]
    for i in range(2):
        ops += [FormatOp(f"p{i}", template=("SYSTEM RULES. Document: ", Ref("doc"), f" step {i}")),
                LlmOp(f"a{i}", prompt=f"p{i}", mode="generate")]
    ops.append(OutputOp("o", input="a1"))
    shared = build_trt(Plan(tuple(ops)), CHATML).shared_prefixes()
    assert [(p.text, p.consumers, p.is_static) for p in shared] == [
        ("SYSTEM RULES. Document: ", ("a0", "a1"), True)]
