"""Map the package's errors to gRPC status codes and to helium.v1.ErrorCode."""

from __future__ import annotations

import asyncio

import grpc

from helium_trt.api.helium.v1 import service_pb2
from helium_trt import errors

_GRPC_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (errors.InvalidWorkflowError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.EngineUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.RequestCancelledError, grpc.StatusCode.CANCELLED),
    (asyncio.CancelledError, grpc.StatusCode.CANCELLED),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
)

_ERROR_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: service_pb2.ERROR_CODE_INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: service_pb2.ERROR_CODE_NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED: service_pb2.ERROR_CODE_RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED: service_pb2.ERROR_CODE_DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED: service_pb2.ERROR_CODE_CANCELLED,
    grpc.StatusCode.UNAVAILABLE: service_pb2.ERROR_CODE_UNAVAILABLE,
}


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    for cls, code in _GRPC_CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def error_code(exc: BaseException) -> int:
    """The helium.v1.ErrorCode for an exception (INTERNAL when it is not one of ours)."""
    return _ERROR_CODES.get(grpc_code(exc), service_pb2.ERROR_CODE_INTERNAL)
