"""Rule unroll_loops: replace each bounded LoopOp by copies of its body, one per iteration."""

from __future__ import annotations

from dataclasses import replace

from helium_trt.optimizer.base import OptimizeContext
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    ITERATION, ConstantOp, LoopOp, Op, SwitchCase, SwitchOp, with_inputs_renamed,
)


class UnrollLoops:
    """Unroll ``LoopOp(init, state, result, max_iterations=N, body)`` into N body copies.

    Copy ``i`` (0-based) of body operator ``b`` is ``{loop}.{i}.{b}``; inside it, the state id
    reads the previous iteration's value (``init`` for i = 0) and ``iteration`` reads the
    constant ``{loop}.{i}.iteration`` (i + 1). Consumers of the loop are renamed to the last
    iteration's value.

    With ``stop_regex``, iteration i >= 1 is guarded by a ``{loop}.{i}.next`` switch on the
    text the pattern is tested on (``stop_on``'s output in the latest iteration that ran): once
    it matches, the switch yields the incoming state unchanged (the body is never computed
    again), else the body's result. ``init`` is never tested: a state that starts with a
    few-shot prefix does not stop the loop before it runs. When ``stop_on`` is not ``result``,
    a second switch ``{loop}.{i}.tested`` carries that text forward the same way.

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
    tested = None  # id of the text the stop pattern is tested on before this iteration
    uses_iteration = any(ITERATION in b.inputs for b in loop.body)
    for i in range(loop.max_iterations):
        prefix = f"{loop.id}.{i}."
        mapping = {b.id: prefix + b.id for b in loop.body}
        mapping[loop.state] = state
        if uses_iteration:
            out.append(ConstantOp(prefix + ITERATION, text=str(i + 1)))
            mapping[ITERATION] = prefix + ITERATION
        for b in loop.body:
            out.append(with_inputs_renamed(replace(b, id=prefix + b.id), mapping))
        result = prefix + loop.result
        if not loop.stop_regex:
            state = result
            continue
        stop_text = prefix + (loop.stop_on or loop.result)
        if tested is None:  # the first iteration always runs
            state, tested = result, stop_text
            continue
        out.append(_guard(prefix + "next", tested, loop.stop_regex, state, result))
        if stop_text != result:
            out.append(_guard(prefix + "tested", tested, loop.stop_regex, tested, stop_text))
            tested = prefix + "tested"
        else:
            tested = prefix + "next"
        state = prefix + "next"
    return out, state


def _guard(op_id: str, tested: str, pattern: str, stopped: str, running: str) -> SwitchOp:
    """``stopped`` when ``pattern`` matches the text of ``tested``, else ``running``."""
    return SwitchOp(op_id, input=tested, match="regex", cases=(SwitchCase(pattern, stopped),),
                    default_target=running)
