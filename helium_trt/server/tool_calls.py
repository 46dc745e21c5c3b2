"""SessionToolCalls: one Session stream's tool calls, sent to the client and answered by it.

The run's tool callback sends a ToolCall event and waits; the client's ToolResults are routed
back by call id. Nothing waits forever on the client: a call's row times out in the runtime
(RunOptions.tool_call_timeout_s), a half-closed client fails every call pending or still to
come, and a result naming no call ends the stream with INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from helium_trt.api.helium.v1 import service_pb2
from helium_trt.errors import HeliumError, InvalidWorkflowError
from helium_trt.runtime.workflow import ToolError


class SessionToolCalls:
    """Puts ToolCall events (and a fatal client error, as an exception) on ``outbound``."""

    def __init__(self, outbound: asyncio.Queue) -> None:
        self._outbound = outbound
        self._pending: dict[str, asyncio.Future] = {}
        # Calls answered or given up (timed out, row failed): a late result for one is dropped.
        self._settled: set[str] = set()
        self._client_closed = False

    async def call(self, call: service_pb2.ToolCall) -> service_pb2.ToolResult:
        """The run's tool callback: send ``call`` to the client and wait for its result."""
        if self._client_closed:
            raise ToolError(f"the client closed its side of the Session before tool call "
                            f"{call.call_id!r} ({call.name}) was made")
        future = asyncio.get_running_loop().create_future()
        self._pending[call.call_id] = future
        try:
            self._outbound.put_nowait(service_pb2.RunEvent(tool_call=call))
            return await future
        finally:
            if self._pending.pop(call.call_id, None) is not None:
                self._settled.add(call.call_id)

    async def route(self, messages: AsyncIterator[service_pb2.SessionMessage]) -> None:
        """Deliver the client's ToolResults until it half-closes; a protocol error goes to
        ``outbound`` (the Session then aborts with its status)."""
        try:
            async for message in messages:
                if message.WhichOneof("message") != "tool_result":
                    raise InvalidWorkflowError("every Session message after the first must carry "
                                               "a ToolResult", field="tool_result")
                self._deliver(message.tool_result)
        except HeliumError as exc:
            self._outbound.put_nowait(exc)
            return
        self._close()

    def _deliver(self, result: service_pb2.ToolResult) -> None:
        future = self._pending.pop(result.call_id, None)
        if future is None:
            if result.call_id in self._settled:
                return
            raise InvalidWorkflowError(f"{result.call_id!r} names no tool call of this Session",
                                       field="tool_result.call_id")
        self._settled.add(result.call_id)
        if not future.done():  # done: cancelled (timed out) and not yet cleaned up
            future.set_result(result)

    def _close(self) -> None:
        self._client_closed = True
        for call_id, future in self._pending.items():
            if not future.done():
                future.set_exception(ToolError(f"the client closed its side of the Session "
                                               f"with tool call {call_id!r} pending"))
            self._settled.add(call_id)
        self._pending.clear()
