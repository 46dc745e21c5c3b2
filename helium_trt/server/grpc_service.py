"""helium.v1.HeliumService over grpc.aio: request limits, status codes, health and reflection.

The servicer only translates: limits and errors here, everything else in ``HeliumCore``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Awaitable, Callable, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc
from helium_trt.engine.base import EngineHealth
from helium_trt.errors import HeliumError
from helium_trt.server.auth import AuthInterceptor, TlsFiles, TokenStore, current_tenant
from helium_trt.server.core import ServerLimits, check_limits
from helium_trt.server.guard import add_servicer
from helium_trt.server.health import HealthPolicy, HealthWatcher
from helium_trt.server.status import grpc_code
from helium_trt.server.tenants import Tenant
from helium_trt.server.tool_calls import SessionToolCalls

log = logging.getLogger(__name__)
SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["HeliumService"].full_name

ToolCallback = Callable[[service_pb2.ToolCall], Awaitable[service_pb2.ToolResult]]


class Core(Protocol):
    """What the service needs from the runtime (helium_trt.server.core.HeliumCore). Every call
    acts for the calling client's tenant (server.auth.current_tenant)."""

    def run(self, request: service_pb2.RunRequest, tools: ToolCallback | None,
            tenant: Tenant) -> AsyncIterator[service_pb2.RunEvent]: ...

    async def explain(self, request: service_pb2.ExplainRequest,
                      tenant: Tenant) -> service_pb2.ExplainResponse: ...

    async def warm(self, request: service_pb2.WarmRequest,
                   tenant: Tenant) -> service_pb2.WarmResponse: ...

    def stats(self, tenant: Tenant) -> service_pb2.StatsResponse: ...

    def health(self) -> EngineHealth: ...


class HeliumServicer(service_pb2_grpc.HeliumServiceServicer):
    def __init__(self, core: Core, limits: ServerLimits = ServerLimits()):
        self._core = core
        self._limits = limits

    async def Run(self, request, context):
        try:
            _check_limits(request, self._limits, "Run")
            async for event in self._core.run(request, None, tenant=current_tenant()):
                yield event
        except HeliumError as exc:
            await context.abort(grpc_code(exc), str(exc))

    async def Session(self, request_iterator, context):
        first = await _first_message(request_iterator, context)
        outbound: asyncio.Queue = asyncio.Queue()
        tools = SessionToolCalls(outbound)
        reader = asyncio.create_task(tools.route(request_iterator))
        try:
            _check_limits(first.run, self._limits, "Session")
            events = self._core.run(first.run, tools.call, tenant=current_tenant())
            async for event in _merge(events, outbound):
                yield event
        except HeliumError as exc:
            await context.abort(grpc_code(exc), str(exc))
        finally:
            reader.cancel()

    async def Explain(self, request, context):
        try:
            check_limits(request.request, self._limits)
            return await self._core.explain(request, tenant=current_tenant())
        except HeliumError as exc:
            _log_refused("Explain", exc)
            await context.abort(grpc_code(exc), str(exc))

    async def Warm(self, request, context):
        try:
            check_limits(service_pb2.RunRequest(workflow=request.workflow), self._limits)
            return await self._core.warm(request, tenant=current_tenant())
        except HeliumError as exc:
            _log_refused("Warm", exc)
            await context.abort(grpc_code(exc), str(exc))

    async def Stats(self, request, context):
        return self._core.stats(tenant=current_tenant())


def _check_limits(request: service_pb2.RunRequest, limits: ServerLimits, method: str) -> None:
    """check_limits, logging a refusal (a refusal later, in the run, is in its run log line)."""
    try:
        check_limits(request, limits)
    except HeliumError as exc:
        _log_refused(method, exc)
        raise


def _log_refused(method: str, exc: HeliumError) -> None:
    log.warning("refused %s for tenant %r: %s: %s", method, current_tenant().name,
                grpc_code(exc).name, exc)


async def _first_message(request_iterator, context) -> service_pb2.SessionMessage:
    async for message in request_iterator:
        if message.WhichOneof("message") != "run":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "field 'run': the first Session message must carry the RunRequest")
        return message
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the Session stream carried no message")


async def _merge(events: AsyncIterator, side: asyncio.Queue) -> AsyncIterator:
    """Events from the run interleaved with tool calls queued while it waits on the client; an
    exception on ``side`` (the client broke the Session's protocol) is raised."""
    done = object()

    async def pump():
        try:
            async for event in events:
                await side.put(event)
        finally:
            await side.put(done)

    task = asyncio.create_task(pump())
    try:
        while (item := await side.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
        await task  # re-raise the run's exception, if any
    finally:
        task.cancel()


async def start_server(core: Core, address: str = "127.0.0.1:50051",
                       limits: ServerLimits = ServerLimits(),
                       health_policy: HealthPolicy = HealthPolicy(),
                       on_give_up: Callable[[str], None] | None = None,
                       tls: TlsFiles | None = None, tokens: TokenStore | None = None,
                       ) -> tuple[grpc.aio.Server, int]:
    """Start the service with health and reflection; returns the server and its bound port.

    Health ("" and helium.v1.HeliumService) follows ``core.health()`` (server.health); past
    ``health_policy.give_up_after_s`` unhealthy, ``on_give_up`` is called once with why.
    With ``tls`` the port speaks only TLS; with ``tokens`` every HeliumService call needs a
    bearer token from it (server.auth); health and reflection stay open.
    """
    options = [("grpc.max_receive_message_length", limits.max_message_bytes),
               ("grpc.max_send_message_length", limits.max_message_bytes)]
    interceptors = [AuthInterceptor(lambda: tokens.table)] if tokens is not None else []
    server = grpc.aio.server(options=options, interceptors=interceptors)
    # Not the generated add_HeliumServiceServicer_to_server: bad bytes get INVALID_ARGUMENT and
    # unexpected errors INTERNAL instead of UNKNOWN (server.guard).
    add_servicer(HeliumServicer(core, limits), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME), server)
    port = server.add_secure_port(address, tls.server_credentials()) if tls is not None \
        else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind {address}")
    await server.start()
    # A core without kept prefixes to restore (a test's stand-in) has no rewarm_restarted.
    watcher = HealthWatcher(core, health, (SERVICE_NAME, ""), health_policy, on_give_up,
                            on_poll=getattr(core, "rewarm_restarted", None))
    await watcher.check(asyncio.get_running_loop().time())
    task = asyncio.create_task(_watch_until_stopped(watcher, server), name="helium-health")
    _watchers.add(task)  # the loop keeps only a weak reference to a task
    task.add_done_callback(_watchers.discard)
    return server, port


_watchers: set[asyncio.Task] = set()


async def _watch_until_stopped(watcher: HealthWatcher, server: grpc.aio.Server) -> None:
    polling = asyncio.create_task(watcher.run())
    try:
        await server.wait_for_termination()
    finally:
        polling.cancel()
