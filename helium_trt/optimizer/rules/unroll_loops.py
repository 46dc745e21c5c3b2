"""Rule unroll_loops: replace each bounded LoopOp by copies of its body, one per iteration."""

from __future__ import annotations

from dataclasses import replace

from helium_trt.optimizer.base import OptimizeContext
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import LoopOp, Op, SwitchCase, SwitchOp, with_inputs_renamed


class UnrollLoops:
    """Unroll ``LoopOp(init, state, result, max_iterations=N, body)`` into N body copies.

    Copy ``i`` (0-based) of body operator ``b`` is ``{loop}.{i}.{b}``; inside it, the state id
    reads the previous iteration's value (``init`` for i = 0). Consumers of the loop are renamed
    to the last iteration's value. With ``stop_regex``, each iteration is guarded by a
    ``{loop}.{i}.next`` switch that yields the incoming state unchanged once it matches (so the
    body is never computed again), else the body's result.

    Example: ``L = loop(init=draft, state=s, result=r, N=2, body=[p: "Improve {s}", r: llm(p)])``
    becomes ``L.0.p: "Improve {draft}", L.0.r: llm(L.0.p), L.1.p: "Improve {L.0.r}",
    L.1.r: llm(L.1.p)`` and every ``{L}`` becomes ``{L.1.r}``.
    """

    name = "unroll_loops"

    def apply(self, plan: Plan, ctx: OptimizeContext) -> Plan:
        loops = [op for op in plan.ops if isinstance(op, LoopOp)]
        if not loops:
            return plan
        rename: dict[str, str] = {}
        out: list[Op] = []
        for op in plan.ops:
            if isinstance(op, LoopOp):
                copies, last = _unroll(op)
                out.extend(copies)
                rename[op.id] = last
            else:
                out.append(op)
        return plan.replace_ops(with_inputs_renamed(op, rename) for op in out)


def _unroll(loop: LoopOp) -> tuple[list[Op], str]:
    """The unrolled operators of ``loop`` and the id holding its final value."""
    out: list[Op] = []
    state = loop.init
    for i in range(loop.max_iterations):
        prefix = f"{loop.id}.{i}."
        mapping = {b.id: prefix + b.id for b in loop.body}
        mapping[loop.state] = state
        for b in loop.body:
            out.append(with_inputs_renamed(replace(b, id=prefix + b.id), mapping))
        result = prefix + loop.result
        if loop.stop_regex:
            guard = SwitchOp(prefix + "next", input=state, match="regex",
                             cases=(SwitchCase(loop.stop_regex, state),), default_target=result)
            out.append(guard)
            result = guard.id
        state = result
    return out, state

