"""`serve`'s TLS, authentication and sharing flags (docs/security.md says how to use them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helium_trt.errors import ConfigError
from helium_trt.server.auth import TlsFiles, TokenStore

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


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
                   "(repeatable): they are warmed and kept at start, and any tenant's prompt "
                   "that starts with one reuses its KV blocks; everything else stays per tenant")


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
    host = args.address.rsplit(":", 1)[0]
    if tokens is not None and tls is None and host not in _LOOPBACK_HOSTS:
        print(f"helium-trt serve: warning: bearer tokens travel in plaintext to {host}; "
              "add --tls-cert/--tls-key", file=sys.stderr, flush=True)
    return tls, tokens


async def publish_workflows(core, paths: list[str]) -> None:
    """Make each workflow file's static prefixes public (HeliumCore.publish), saying so."""
    from helium_trt.api.convert import load_request_file

    for path in paths:
        workflow = load_request_file(path).workflow
        done = await core.publish(workflow)
        print(f"helium-trt serve: public workflow {workflow.name or path!r}: "
              f"{done.num_prefixes} static prefix(es), {done.tokens_computed} tokens warmed",
              file=sys.stderr, flush=True)
