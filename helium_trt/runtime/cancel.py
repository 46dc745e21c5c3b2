"""Cooperative cancellation of work a run does in a worker thread (its planning).

Cancelling the task that awaits ``asyncio.to_thread`` raises CancelledError in that task at once,
but the thread runs on to its end: a run cancelled while planning a big request (every row's
prompts rendered and tokenized, seconds to tens of seconds) kept an executor thread busy with
work nobody would read. ``run_cancellable`` hands the function a CancelToken and sets it when
the awaiting task is cancelled; the function checks the token between its steps and stops with
PlanningCancelled at the next one.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from concurrent.futures import Executor
from typing import Callable, TypeVar

from helium_trt.errors import RequestCancelledError

T = TypeVar("T")


class PlanningCancelled(RequestCancelledError):
    """Planning stopped early: its run was cancelled (client cancel, deadline, shutdown). The
    awaiting task has its own CancelledError already; this only ends the thread's work."""


class CancelToken:
    """Set once by the event loop's side, read by a worker thread between steps of its work.

    A check costs one Event read: call it per row or per prompt, never per token.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def is_cancelled(self) -> bool:
        return self._event.is_set()

    def check(self, where: str, *args: object) -> None:
        """Raise PlanningCancelled, saying where the work stopped (``where % args``: formatted
        only then), once cancelled."""
        if self._event.is_set():
            raise PlanningCancelled(f"planning stopped {where % args}: its request was cancelled")


async def run_cancellable(executor: Executor | None, func: Callable[..., T], /, *args,
                          **kwargs) -> T:
    """``func(*args, cancel=token, **kwargs)`` in ``executor`` (None: the loop's default), in a
    copy of the caller's context as ``asyncio.to_thread`` runs it. When the awaiting task is
    cancelled, the token is set (so ``func`` stops at its next check) and CancelledError goes
    on; work still queued in ``executor`` never starts."""
    token = CancelToken()
    call = functools.partial(contextvars.copy_context().run, func, *args, cancel=token, **kwargs)
    try:
        return await asyncio.get_running_loop().run_in_executor(executor, call)
    except asyncio.CancelledError:
        token.cancel()
        raise
