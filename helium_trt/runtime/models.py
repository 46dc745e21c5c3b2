"""The models a server serves, by name, and binding a plan's LLM operators to them.

``LlmOp.model`` names the model a call runs on; empty means the default (the first served).
``bind_models`` resolves every LLM operator's name before optimizing, so an unknown name is
refused at plan time, before any engine work, and two spellings of one model ("" and its name)
share result-cache entries, single flights and merged operators.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence, Union

from helium_trt.engine.base import Engine
from helium_trt.errors import ModelNotFoundError
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import LlmOp, LoopOp, Op


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One served model: its name and its engine workers (all on the same weights)."""

    name: str
    engines: tuple[Engine, ...]


class ModelSet:
    """Served models in order; the first is the default. Names are unique and non-empty."""

    def __init__(self, models: Sequence[ServedModel]) -> None:
        if not models:
            raise ValueError("a ModelSet needs at least one model")
        self._models = {m.name: m for m in models}
        if len(self._models) != len(models) or "" in self._models:
            raise ValueError("model names must be unique and non-empty")
        if any(not m.engines for m in models):
            raise ValueError("every model needs at least one engine")
        self.default = models[0].name

    @classmethod
    def single(cls, engines: Sequence[Engine], name: str | None = None) -> "ModelSet":
        """One model on ``engines``, named ``name`` or the first engine's model name."""
        return cls([ServedModel(name or engines[0].info.model_name or "default", tuple(engines))])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._models)

    @property
    def engines(self) -> list[Engine]:
        """Every model's workers, model by model (health, stats, close)."""
        return [e for m in self._models.values() for e in m.engines]

    def __getitem__(self, name: str) -> ServedModel:
        return self._models[name or self.default]

    def __len__(self) -> int:
        return len(self._models)

    def resolve(self, name: str, op_id: str) -> str:
        """``name`` (empty: the default) if served, else ModelNotFoundError naming the
        operator and field."""
        if not name:
            return self.default
        if name not in self._models:
            served = ", ".join(repr(n) for n in self._models)
            raise ModelNotFoundError(f"operator {op_id!r}, field 'model': no model {name!r} is "
                                     f"served here (served: {served}; empty means "
                                     f"{self.default!r})")
        return name


EnginesOrModels = Union[Sequence[Engine], ModelSet]


def as_models(engines: EnginesOrModels) -> ModelSet:
    """A ModelSet as given, or one model on a plain list of engines."""
    return engines if isinstance(engines, ModelSet) else ModelSet.single(list(engines))


def bind_models(plan: Plan, models: ModelSet) -> Plan:
    """``plan`` with every LLM operator's model resolved to a served name (loop bodies too);
    ModelNotFoundError for the first unknown one."""
    ops = _bind(plan.ops, models)
    return plan if ops == plan.ops else plan.replace_ops(ops)


def _bind(ops: tuple[Op, ...], models: ModelSet) -> tuple[Op, ...]:
    out = []
    for op in ops:
        if isinstance(op, LlmOp):
            name = models.resolve(op.model, op.id)
            op = op if name == op.model else replace(op, model=name)
        elif isinstance(op, LoopOp):
            body = _bind(op.body, models)
            op = op if body == op.body else replace(op, body=body)
        out.append(op)
    return tuple(out)
