"""Tool callbacks for `helium-trt run --tools module:function`, and the check that refuses a
workflow with tool-call operators when no callback was given (before any LLM call runs).

The callback is a plain Python function ``function(name: str, args: dict[str, str]) -> str``:
``name`` is the ToolCallOp's tool name, ``args`` its arguments as texts (operator outputs;
lists and conversations as JSON), and the returned text is the operator's output. It may be a
coroutine function. An exception it raises fails that row, naming the operator and the tool.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Callable

from helium_trt.errors import InvalidWorkflowError
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import LoopOp, ToolCallOp

TOOLS_HELP = (
    "MODULE:FUNCTION answering the workflow's tool calls, as `function(name: str, args: "
    "dict[str, str]) -> str` (or an async def): name is the tool_call operator's tool name, "
    "args its arguments as texts, the returned text is the operator's output; an exception "
    "fails the row. MODULE is an importable module (the current directory is searched) or a "
    "path to a .py file, e.g. examples/react_tools.py:lookup")


def tool_op_ids(plan: Plan) -> tuple[str, ...]:
    """Ids of every tool-call operator in ``plan``, loop bodies included (in plan order)."""
    def walk(ops) -> list[str]:
        found: list[str] = []
        for op in ops:
            if isinstance(op, ToolCallOp):
                found.append(op.id)
            elif isinstance(op, LoopOp):
                found.extend(walk(op.body))
        return found

    return tuple(walk(plan.ops))


def require_tools(plan: Plan, spec: str | None) -> None:
    """Refuse a plan with tool-call operators when no ``--tools`` was given."""
    ids = tool_op_ids(plan)
    if ids and spec is None:
        raise InvalidWorkflowError(
            f"the workflow calls tools ({', '.join(repr(i) for i in ids)}) and no tool callback "
            "was given: pass --tools MODULE:FUNCTION (see `helium-trt run --help`)",
            op_id=ids[0], field="tool_call")


def load_tools(spec: str) -> Callable:
    """The function ``spec`` (``module:function`` or ``path/file.py:function``) names."""
    module_name, sep, func_name = spec.rpartition(":")
    if not sep or not module_name or not func_name:
        raise InvalidWorkflowError(f"--tools {spec!r}: expected MODULE:FUNCTION")
    module = _import(module_name, spec)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise InvalidWorkflowError(f"--tools {spec!r}: {module_name} has no function "
                                   f"{func_name!r}")
    return func


def _import(module_name: str, spec: str):
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            found = importlib.util.spec_from_file_location(path.stem, path)
            if found is None or not path.is_file():
                raise InvalidWorkflowError(f"--tools {spec!r}: no file {module_name}")
            module = importlib.util.module_from_spec(found)
            found.loader.exec_module(module)
            return module
        if "" not in sys.path:
            sys.path.insert(0, "")
        return importlib.import_module(module_name)
    except InvalidWorkflowError:
        raise
    except Exception as exc:  # an import error of the user's module, of any kind
        raise InvalidWorkflowError(f"--tools {spec!r}: cannot import {module_name}: "
                                   f"{type(exc).__name__}: {exc}") from None


def as_tool_callback(func: Callable):
    """``func(name, args)`` as the runtime's ToolCallback (a sync function runs in a thread,
    so a slow tool does not stall the other rows' LLM calls)."""
    from helium_trt.runtime.workflow import ToolError

    async def call(tool_call) -> str:
        try:
            if inspect.iscoroutinefunction(func):
                result = await func(tool_call.name, dict(tool_call.args))
            else:
                result = await asyncio.to_thread(func, tool_call.name, dict(tool_call.args))
        except Exception as exc:
            raise ToolError(f"tool {tool_call.name!r} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, str):
            raise ToolError(f"tool {tool_call.name!r} returned {type(result).__name__}, "
                            "not str")
        return result

    return call
