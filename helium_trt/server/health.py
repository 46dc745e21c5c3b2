"""The server's gRPC health follows its engines: NOT_SERVING while any engine is unhealthy,
SERVING once all are back, and a give-up signal when one stays down too long.

NOTE: the watcher polls ``core.health()`` every 0.2 s rather than taking callbacks from the
engines. Reading health is a field read per engine, so polling costs nothing measurable; engine
state changes on other threads (the embedded engine) or in other tasks (Triton), where a
callback would have to hop onto the server's loop and be torn down with it for every engine
kind; and 0.2 s is well inside the second a client may take to see NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from grpc_health.v1 import health_pb2

from helium_trt.engine.base import EngineHealth

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """``give_up_after_s``: an engine unhealthy this long without a break makes the watcher call
    its ``on_give_up`` once (`helium-trt serve` then exits non-zero); None: never give up."""

    poll_interval_s: float = 0.2
    give_up_after_s: float | None = None


class HealthSource(Protocol):
    def health(self) -> EngineHealth: ...


class HealthWatcher:
    """Sets ``services``' status on a grpc_health HealthServicer from ``source.health()``;
    ``on_poll`` runs after every poll (HeliumCore.rewarm_restarted: engines back from a
    failure get their kept prefixes warmed again)."""

    def __init__(self, source: HealthSource, servicer, services: Sequence[str],
                 policy: HealthPolicy = HealthPolicy(),
                 on_give_up: Callable[[str], None] | None = None,
                 on_poll: Callable[[], None] | None = None):
        self._source = source
        self._servicer = servicer
        self._services = tuple(services)
        self._policy = policy
        self._on_give_up = on_give_up
        self._on_poll = on_poll
        self._serving: bool | None = None
        self._unhealthy_since: float | None = None
        self._gave_up = False

    async def check(self, now: float) -> EngineHealth:
        """Poll once at loop time ``now``: publish a change, and give up past the bound."""
        health = self._source.health()
        if health.healthy is not self._serving:
            await self._publish(health)
        if self._on_poll is not None:
            self._on_poll()
        if health.healthy:
            self._unhealthy_since = None
            return health
        if self._unhealthy_since is None:
            self._unhealthy_since = now
        bound = self._policy.give_up_after_s
        if bound is not None and not self._gave_up and now - self._unhealthy_since >= bound:
            self._gave_up = True
            if self._on_give_up is not None:
                self._on_give_up(f"an engine has been unhealthy for {bound:g} s without a break "
                                 f"({health.reason})")
        return health

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.check(loop.time())
            await asyncio.sleep(self._policy.poll_interval_s)

    async def _publish(self, health: EngineHealth) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if health.healthy
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for service in self._services:
            await self._servicer.set(service, status)
        if self._serving is not None or not health.healthy:
            if health.healthy:
                log.warning("health: SERVING again, every engine is back")
            else:
                log.error("health: NOT_SERVING: %s", health.reason)
        self._serving = health.healthy

