"""Test helper: a tiny reference evaluator of plans, independent of the optimizer's code.

LLM calls are replaced by a deterministic fake function of the rendered prompt text, tool calls
by a fake function of their arguments. Used to check that rewrites keep every output the same.
"""

from __future__ import annotations

import hashlib
import re

from helium_trt.plan.chat import CHATML, ChatFormat
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    ITERATION, CacheFetchOp, ConcatOp, ConstantOp, FormatOp, Index, InputOp, Item, LlmOp, LoopOp,
    MapOp, OutputOp, Ref, SwitchOp, ToolCallOp,
)


def fake_llm(prompt: str) -> str:
    return "ans-" + hashlib.sha1(prompt.encode()).hexdigest()[:8]


class Evaluator:
    def __init__(self, plan: Plan, row: dict, *, llm=fake_llm, fmt: ChatFormat = CHATML):
        self.ops = dict(plan.by_id)
        self.row, self.llm, self.fmt = row, llm, fmt
        self.row_index = 0
        self.values: dict = {}
        self.llm_prompts: list[str] = []

    def get(self, op_id):
        if op_id not in self.values:
            self.values[op_id] = self._eval(self.ops[op_id])
        return self.values[op_id]

    def _eval(self, op):
        if isinstance(op, InputOp):
            return self.row[op.column]
        if isinstance(op, ConstantOp):
            return op.text
        if isinstance(op, FormatOp):
            if op.is_chat:
                conv = []
                for m in op.messages:
                    if m.history is not None:
                        conv.extend(self.get(m.history))
                    else:
                        conv.append({"role": m.role, "content": self._fill(m.template)})
                return conv
            return self._fill(op.template)
        if isinstance(op, LlmOp):
            return self._llm(op)
        if isinstance(op, ConcatOp):
            parts = []
            for p in op.parts:
                v = self.get(p)
                parts.extend(v if isinstance(v, list) else [v])
            return op.separator.join(parts)
        if isinstance(op, MapOp):
            return [self._fill(op.template, item=x, index=i) for i, x in enumerate(self.get(op.list_id))]
        if isinstance(op, SwitchOp):
            return self.get(self._choose(op, self._text(self.get(op.input))))
        if isinstance(op, LoopOp):
            return self._loop(op)
        if isinstance(op, ToolCallOp):
            return f"tool:{op.name}(" + ",".join(f"{k}={self.get(v)}" for k, v in op.args) + ")"
        if isinstance(op, OutputOp):
            return self.get(op.input)
        if isinstance(op, CacheFetchOp):
            hits = dict(op.hits)
            if self.row_index in hits:
                return hits[self.row_index]
            return self._llm(op.fallback)
        raise TypeError(op)

    def _llm(self, op: LlmOp):
        prompt = self.get(op.prompt)
        chat = op.mode == "chat" or (op.mode == "auto" and isinstance(prompt, list))
        if chat:
            conv = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            text = self.fmt.render(conv, True)
        else:
            text = self._text(prompt)
        self.llm_prompts.append(text)
        reply = self.llm(text)
        if op.return_history:
            return list(conv) + [{"role": "assistant", "content": reply}]
        return reply

    def _render(self, conv):
        return self.fmt.render(conv, False)

    def _text(self, value):
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return self._render(value)
        if isinstance(value, list):
            return "\n".join(value)
        return value

    def _fill(self, template, item=None, index=None):
        out = []
        for s in template:
            if isinstance(s, str):
                out.append(s)
            elif isinstance(s, Ref):
                out.append(self._text(self.get(s.op_id)))
            elif isinstance(s, Item):
                out.append(item)
            elif isinstance(s, Index):
                out.append(str(index))
        return "".join(out)

    @staticmethod
    def _choose(op: SwitchOp, text: str):
        for c in op.cases:
            if op.match == "choice" and text.strip().lower() == c.value.strip().lower():
                return c.target
            if op.match == "regex" and re.search(c.value, text):
                return c.target
        return op.default_target

    def _loop(self, op: LoopOp):
        """Iterations one after another; after each, the stop pattern is searched in the
        ``stop_on`` operator's output (default: the result) of that iteration."""
        state = self.get(op.init)
        for i in range(op.max_iterations):
            saved = (self.ops, self.values)
            self.ops = {**self.ops, **{b.id: b for b in op.body}}
            self.values = {k: v for k, v in self.values.items()}
            self.values[op.state] = state
            self.values[ITERATION] = str(i + 1)
            for b in op.body:
                self.values.pop(b.id, None)
            state = self.get(op.result)
            tested = self.get(op.stop_on or op.result)
            self.ops, self.values = saved
            if op.stop_regex and re.search(op.stop_regex, self._text(tested)):
                break
        return state


def evaluate(plan: Plan, rows=None, *, llm=fake_llm, fmt: ChatFormat = CHATML):
    """Per row, {output name: value}; plus the number of LLM calls made."""
    results, num_calls = [], 0
    for i, row in enumerate(rows if rows is not None else plan.rows):
        ev = Evaluator(plan, row, llm=llm, fmt=fmt)
        ev.row_index = i
        results.append({(o.name or o.id): ev.get(o.id) for o in plan.outputs})
        num_calls += len(ev.llm_prompts)
    return results, num_calls
