"""Who is calling: TLS credentials for the gRPC port and a bearer-token interceptor.

The interceptor runs before every HeliumService method: a call without a token, or with one the
tokens file does not list, ends with UNAUTHENTICATED; otherwise the handler runs with the
token's tenant as ``current_tenant()``. Health checking and reflection stay open, so load
balancers and `grpcurl list` work without a token. What a tenant may do once known (quotas,
priority) is checked by HeliumCore, which answers PERMISSION_DENIED or RESOURCE_EXHAUSTED.

The client side of the same lives here too (``ClientTlsFiles``, ``bearer_metadata``), for
`helium-trt run --server`, so both ends read PEM files and spell the metadata one way.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc

from helium_trt.errors import ConfigError
from helium_trt.server.tenants import DEFAULT_TENANT, Tenant, TokenTable

log = logging.getLogger(__name__)

# Methods every client may call without a token.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

_tenant: contextvars.ContextVar[Tenant] = contextvars.ContextVar("helium_tenant",
                                                                 default=DEFAULT_TENANT)


def current_tenant() -> Tenant:
    """The calling client's tenant (DEFAULT_TENANT on a server without auth)."""
    return _tenant.get()


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of `serve --tls-cert/--tls-key[/--tls-client-ca]`. With ``client_ca`` every
    client must present a certificate signed by it (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def server_credentials(self) -> grpc.ServerCredentials:
        cert, key = _read(self.cert, "--tls-cert"), _read(self.key, "--tls-key")
        ca = _read(self.client_ca, "--tls-client-ca") if self.client_ca else None
        return grpc.ssl_server_credentials(((key, cert),), root_certificates=ca,
                                           require_client_auth=ca is not None)


@dataclass(frozen=True, slots=True)
class ClientTlsFiles:
    """PEM files of `run --server`'s --tls-ca/--tls-cert/--tls-key: the CA that signed the
    server's certificate (None: the system's roots) and, for mutual TLS, the client's own
    certificate and key."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "--tls-ca") if self.ca else None,
            private_key=_read(self.key, "--tls-key") if self.key else None,
            certificate_chain=_read(self.cert, "--tls-cert") if self.cert else None)


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata AuthInterceptor takes a token from."""
    return (("authorization", f"Bearer {token}"),)


def _read(path: Path, flag: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag} {str(path)!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{flag} {str(path)!r}: not a PEM file")
    return data


class TokenStore:
    """The tokens file, read at start and again on ``reload`` (`serve` calls it on SIGHUP)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.table = TokenTable.load(self.path)

    def reload(self) -> bool:
        """Re-read the file; a malformed file keeps the previous tokens (logged) -> False."""
        try:
            self.table = TokenTable.load(self.path)
        except ConfigError as exc:
            log.warning("auth tokens not reloaded, the previous ones stay in force: %s", exc)
            return False
        log.info("auth tokens reloaded from %s: %d tenant(s)", self.path, len(self.table.tenants))
        return True


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Bearer tokens (metadata ``authorization: Bearer <token>``) -> tenants, per call."""

    def __init__(self, tokens: Callable[[], TokenTable]) -> None:
        self._tokens = tokens

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        token = _bearer_token(details.invocation_metadata or ())
        tenant = self._tokens().tenant_for(token) if token else None
        if tenant is None:
            why = ("the call has no bearer token: this server needs gRPC metadata "
                   "'authorization: Bearer <token>'" if token is None else
                   "the bearer token is not valid on this server")
            log.warning("refused %s: UNAUTHENTICATED (%s)", details.method,
                        "no token" if token is None else "unknown token")
            return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED, why)
        return _as_tenant(handler, tenant)


def _bearer_token(metadata) -> str | None:
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return ""  # present but not a bearer token: not valid, said as such
    return None


def _as_tenant(handler: grpc.RpcMethodHandler, tenant: Tenant) -> grpc.RpcMethodHandler:
    """``handler`` with ``current_tenant()`` set to ``tenant`` while its behaviour runs (the
    behaviour runs in the RPC's own task, so the context variable stays with this call)."""

    def unary(behavior):
        async def call(request, context):
            _tenant.set(tenant)
            return await behavior(request, context)
        return call

    def streamed(behavior):
        async def call(request, context):
            _tenant.set(tenant)
            async for response in behavior(request, context):
                yield response
        return call

    return _rewrap(handler, unary, streamed)


def _refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode,
              message: str) -> grpc.RpcMethodHandler:
    def unary(_behavior):
        async def call(_request, context):
            await context.abort(code, message)
        return call

    def streamed(_behavior):
        async def call(_request, context):
            await context.abort(code, message)
            yield  # never reached: makes this an async generator like the handler it replaces
        return call

    return _rewrap(handler, unary, streamed)


def _rewrap(handler, unary, streamed) -> grpc.RpcMethodHandler:
    if handler.response_streaming:
        kind = "stream_stream" if handler.request_streaming else "unary_stream"
        return handler._replace(**{kind: streamed(getattr(handler, kind))})
    kind = "stream_unary" if handler.request_streaming else "unary_unary"
    return handler._replace(**{kind: unary(getattr(handler, kind))})
