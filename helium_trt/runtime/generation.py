"""One call's generation settings: the values a GenerationConfig takes from other operators
(``max_tokens_from``, ``stop_from``), checked per call, and the configs of its ``n`` samples."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Mapping

from helium_trt.errors import InvalidWorkflowError
from helium_trt.plan.ops import GenerationConfig, InputOp, LlmOp, Op

_WHOLE_NUMBER = re.compile(r"\s*([0-9]{1,9})\s*")


def resolve_config(llm: LlmOp, values: Mapping[str, object], sources: Mapping[str, Op],
                   row: int) -> GenerationConfig:
    """``llm``'s config with ``max_tokens_from`` / ``stop_from`` filled in from ``values`` (one
    element's values). A bad value raises InvalidWorkflowError naming the operator, the field,
    the row and, for a row column, the column."""
    c = llm.config
    if not c.refs:
        return c
    changes: dict = {"max_tokens_from": None, "stop_from": None}
    if c.max_tokens_from is not None:
        text = _text(llm, "max_tokens_from", values[c.max_tokens_from], sources, row)
        m = _WHOLE_NUMBER.fullmatch(text)
        if m is None or int(m.group(1)) < 1:
            raise _bad(llm, "max_tokens_from", sources, row,
                       f"{text[:40]!r} is not a whole number >= 1")
        changes["max_tokens"] = int(m.group(1))
    if c.stop_from is not None:
        text = _text(llm, "stop_from", values[c.stop_from], sources, row)
        if not text:
            raise _bad(llm, "stop_from", sources, row, "the stop string is empty")
        changes["stop"] = (*c.stop, text)
    return replace(c, **changes)


def sample_configs(config: GenerationConfig) -> list[GenerationConfig]:
    """The configs of ``config``'s ``n`` samples: sample j gets seed ``seed + j`` (so sample 0
    is the n = 1 call, and a run is reproducible), or no seed when none is set."""
    if config.n <= 1:
        return [config]
    return [replace(config, n=1, seed=None if config.seed is None else config.seed + j)
            for j in range(config.n)]


def _text(llm: LlmOp, field: str, value, sources: Mapping[str, Op], row: int) -> str:
    if not isinstance(value, str):
        raise _bad(llm, field, sources, row, f"got a {type(value).__name__}, not text")
    return value


def _bad(llm: LlmOp, field: str, sources: Mapping[str, Op], row: int,
         why: str) -> InvalidWorkflowError:
    source_id = getattr(llm.config, field)
    source = sources.get(source_id)
    where = (f"row {row}, column {source.column!r}" if isinstance(source, InputOp)
             else f"row {row}, the output of {source_id!r}")
    return InvalidWorkflowError(f"{where}: {why}", op_id=llm.id, field=f"config.{field}")
