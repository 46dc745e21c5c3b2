"""`serve`'s TLS, authentication and sharing flags, and the client's side of them for `run
--server` (docs/security.md says how to use them)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from helium_trt.errors import ConfigError, HeliumError
from helium_trt.server.auth import (
    ClientTlsFiles, TlsFiles, TokenStore, bearer_metadata,
)

log = logging.getLogger(__name__)
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
TOKEN_ENV = "HELIUM_TOKEN"


def add_security_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-cert", metavar="PEM", help="serve gRPC over TLS with this certificate "
                   "(chain) file; needs --tls-key. Without it the port is plaintext")
    p.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    p.add_argument("--tls-client-ca", metavar="PEM", help="mutual TLS: every client must present "
                   "a certificate signed by this CA (needs --tls-cert)")
    p.add_argument("--auth-tokens", metavar="FILE", help="require a bearer token (gRPC metadata "
                   "'authorization: Bearer TOKEN') on every HeliumService call; FILE maps tokens "
                   "to tenants with their quotas (format: docs/security.md) and is read again "
                   "on SIGHUP. Health and reflection stay open")
    p.add_argument("--public-workflow", action="append", default=[], metavar="FILE",
                   help="share this workflow file's static prompt prefixes across tenants "
                   "(repeatable): they are warmed and kept at start (and read again on "
                   "SIGHUP: a file that no longer loads keeps the previous set), and any "
                   "tenant's prompt that starts with one reuses its KV blocks; everything else "
                   "stays per tenant")


def open_security(args: argparse.Namespace) -> tuple[TlsFiles | None, TokenStore | None]:
    """The TLS files and token store ``args`` ask for; ConfigError on a bad combination or file."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
    tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key),
                   Path(args.tls_client_ca) if args.tls_client_ca else None) \
        if args.tls_cert else None
    if tls is not None:
        tls.server_credentials()  # read the files now: a bad one stops serve before it binds
    tokens = TokenStore(args.auth_tokens) if args.auth_tokens else None
    if tokens is not None and tls is None:
        _warn_plaintext("serve", args.address, "add --tls-cert/--tls-key")
    return tls, tokens


def _warn_plaintext(command: str, address: str, fix: str) -> None:
    host = address.rsplit(":", 1)[0]
    if host not in _LOOPBACK_HOSTS:
        print(f"helium-trt {command}: warning: bearer tokens travel in plaintext to {host}; "
              f"{fix}", file=sys.stderr, flush=True)


def add_client_security_flags(p: argparse.ArgumentParser) -> None:
    """`run --server`'s flags to reach a server started with `serve`'s security flags."""
    p.add_argument("--tls-ca", metavar="PEM", help="with --server: connect over TLS, trusting "
                   "server certificates signed by this CA (its --tls-cert's issuer)")
    p.add_argument("--tls-cert", metavar="PEM", help="with --server: mutual TLS, present this "
                   "client certificate (needs --tls-key; signed by the server's --tls-client-ca)")
    p.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    # NOTE: no --token TOKEN: a token on the command line is visible to every local user (ps).
    p.add_argument("--token-file", metavar="FILE", help="with --server: send the bearer token "
                   f"in FILE (surrounding whitespace dropped); default: ${TOKEN_ENV} if set")


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """How `run --server` connects: TLS files (None: plaintext) and a bearer token."""

    tls: ClientTlsFiles | None = None
    token: str | None = None

    def channel(self, address: str):
        import grpc

        if self.tls is None:
            return grpc.aio.insecure_channel(address)
        return grpc.aio.secure_channel(address, self.tls.channel_credentials())

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return bearer_metadata(self.token) if self.token else None


def open_client_security(args: argparse.Namespace) -> ClientSecurity:
    """The TLS files and token ``args`` (and $HELIUM_TOKEN) ask for; ConfigError when one is
    bad, before anything connects."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if not args.server and (args.tls_ca or args.tls_cert or args.token_file):
        raise ConfigError("--tls-ca, --tls-cert/--tls-key and --token-file need --server")
    tls = None
    if args.tls_ca or args.tls_cert:
        tls = ClientTlsFiles(*(Path(f) if f else None
                               for f in (args.tls_ca, args.tls_cert, args.tls_key)))
        tls.channel_credentials()  # read the files now: a bad one is named before connecting
    token = _read_token(args.token_file) if args.token_file else \
        os.environ.get(TOKEN_ENV, "").strip() or None
    if token is not None and tls is None and args.server:
        _warn_plaintext("run", args.server, "add --tls-ca")
    return ClientSecurity(tls, token)


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--token-file {path!r}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    if not token or any(c.isspace() for c in token):
        raise ConfigError(f"--token-file {path!r}: expected one token (no spaces inside)")
    return token


async def publish_workflows(core, paths: list[str]) -> None:
    """Make the workflow files' static prefixes public (HeliumCore.publish), saying so; a bad
    file raises (InvalidWorkflowError, ConfigError) and changes nothing."""
    workflows = _load_workflows(paths)
    for path, workflow, done in zip(paths, workflows, await core.publish(workflows)):
        print(f"helium-trt serve: public workflow {workflow.name or path!r}: "
              f"{done.num_prefixes} static prefix(es), {done.tokens_computed} tokens warmed",
              file=sys.stderr, flush=True)


def _load_workflows(paths: list[str]) -> list:
    from helium_trt.api.convert import load_request_file

    return [load_request_file(path).workflow for path in paths]


async def reload_public_workflows(core, paths: list[str]) -> bool:
    """Read the public workflow files again (SIGHUP); a file that no longer loads or plans
    keeps the previous public set (logged) -> False."""
    try:
        workflows = await asyncio.to_thread(_load_workflows, paths)
        done = await core.publish(workflows)
    except HeliumError as exc:
        log.warning("public workflows not reloaded, the previous ones stay in force: %s", exc)
        return False
    log.info("public workflows reloaded from %d file(s): %d static prefix(es), %d tokens "
                "warmed", len(paths), sum(d.num_prefixes for d in done),
                sum(d.tokens_computed for d in done))
    return True


def sighup_handler(core, tokens: TokenStore | None,
                   public_paths: list[str]) -> Callable[[], None] | None:
    """What `serve` does on SIGHUP: read the tokens file and the public workflows again (None:
    neither was given, SIGHUP keeps its default action)."""
    if tokens is None and not public_paths:
        return None
    reloading: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    def reload() -> None:
        if tokens is not None:
            tokens.reload()
        if public_paths:
            task = asyncio.ensure_future(reload_public_workflows(core, public_paths))
            reloading.add(task)
            task.add_done_callback(reloading.discard)

    return reload
