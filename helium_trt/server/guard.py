"""Registers the HeliumService servicer so that no call ends with UNKNOWN.

gRPC answers UNKNOWN, with the Python exception's name, when a request does not decode or a
handler raises something unexpected. Here every method gets:

- a request deserializer that never raises into gRPC: bytes that do not parse become
  INVALID_ARGUMENT naming the field at fault (``helium_trt.api.wire``);
- a guard around the handler: a HeliumError that escapes maps to its status
  (``server.status``), anything else is logged with its traceback and becomes INTERNAL.
"""

from __future__ import annotations

import logging

import grpc

from helium_trt.api.helium.v1 import service_pb2
from helium_trt.api.wire import parse_message
from helium_trt.errors import HeliumError, InvalidWorkflowError
from helium_trt.server.status import grpc_code

log = logging.getLogger(__name__)

_HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class _Undecodable:
    """What a unary method receives for bytes that do not parse (gRPC would answer UNKNOWN if
    the deserializer raised)."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidWorkflowError) -> None:
        self.error = error


def add_servicer(servicer, server: grpc.aio.Server, service_name: str = "HeliumService") -> None:
    """Register every method of ``service_name`` (helium.v1) on ``servicer`` with ``server``."""
    service = service_pb2.DESCRIPTOR.services_by_name[service_name]
    handlers = {}
    for method in service.methods:
        request_class = getattr(service_pb2, method.input_type.name)
        response_class = getattr(service_pb2, method.output_type.name)
        streamed = (method.client_streaming, method.server_streaming)
        behavior = getattr(servicer, method.name)
        guarded = _guard_stream(behavior, method.name) if method.server_streaming \
            else _guard_unary(behavior, method.name)
        handlers[method.name] = _HANDLER_KINDS[streamed](
            guarded, request_deserializer=_deserializer(request_class, method.client_streaming),
            response_serializer=response_class.SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _deserializer(request_class, client_streaming: bool):
    def unary(data: bytes):
        try:
            return parse_message(data, request_class)
        except InvalidWorkflowError as exc:
            return _Undecodable(exc)

    def streamed(data: bytes):
        # Raised inside the handler's ``async for`` over the request stream, where the handler
        # (or the guard) maps it to INVALID_ARGUMENT.
        return parse_message(data, request_class)

    return streamed if client_streaming else unary


def _guard_unary(behavior, name: str):
    async def guarded(request, context):
        await _refuse_undecodable(request, context)
        try:
            return await behavior(request, context)
        except Exception as exc:  # noqa: BLE001 - every escape gets a status, never UNKNOWN
            await _abort(exc, context, name)

    return guarded


def _guard_stream(behavior, name: str):
    async def guarded(request, context):
        await _refuse_undecodable(request, context)
        try:
            async for response in behavior(request, context):
                yield response
        except Exception as exc:  # noqa: BLE001 - every escape gets a status, never UNKNOWN
            await _abort(exc, context, name)

    return guarded


async def _refuse_undecodable(request, context) -> None:
    if isinstance(request, _Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request.error))


async def _abort(exc: Exception, context, name: str) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc  # the handler already set its status
    if isinstance(exc, HeliumError):
        await context.abort(grpc_code(exc), str(exc))
    log.exception("HeliumService.%s failed", name)
    await context.abort(grpc.StatusCode.INTERNAL,
                        f"internal error in {name} (the server log has the details)")
