"""Tenants: who a client is and what it may do.

A tenant is the identity of an authenticated client: `serve --auth-tokens FILE` maps bearer
tokens to tenants, each with its quotas. With auth off every client is the one DEFAULT_TENANT.
The tokens file is YAML (JSON is YAML too)::

    tenants:
      team-a:
        tokens: ["a-long-random-token-of-16+-chars"]   # or "sha256:<hex digest of a token>"
        max_concurrent_runs: 4        # Run/Session streams at once; more: RESOURCE_EXHAUSTED
        max_registered_workflows: 2   # Warm(keep=true) registrations; 0: may not register
        max_priority: 0               # highest RunOptions.priority; higher: PERMISSION_DENIED
      team-b:
        tokens: ["another-long-random-token"]

Every limit is optional (absent: no limit). A token maps to exactly one tenant.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import yaml

from helium_trt.errors import ConfigError, InvalidWorkflowError, PermissionDeniedError

MIN_TOKEN_CHARS = 16
# Tenant names appear in logs and as a Prometheus label: short and plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_LIMIT_KEYS = ("max_concurrent_runs", "max_registered_workflows", "max_priority")


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """A tenant's quotas; None means no limit."""

    max_concurrent_runs: int | None = None
    max_registered_workflows: int | None = None
    max_priority: int | None = None


@dataclass(frozen=True, slots=True)
class Tenant:
    """An authenticated identity. ``cache_salt`` keys its KV prefix blocks apart from every other
    tenant's (None only for the default tenant of a server without auth: nothing to isolate)."""

    name: str
    limits: TenantLimits = field(default_factory=TenantLimits)
    cache_salt: str | None = None


DEFAULT_TENANT = Tenant("default")


def tenant_named(name: str, limits: TenantLimits = TenantLimits()) -> Tenant:
    """A tenant with its own cache salt (its name: tenants are told apart by the server, never
    by anything a client chooses)."""
    return Tenant(name, limits, cache_salt=f"tenant:{name}")


def tenant_from_parameter(value, known: Mapping[str, Tenant] | None = None) -> Tenant:
    """The tenant a Triton `helium` request names in its ``tenant`` parameter (absent or empty:
    DEFAULT_TENANT). Triton does not authenticate it: whoever can reach Triton can name any
    tenant, so Triton itself must be protected (docs/security.md).

    With ``known`` (the tenants of the model's ``tenants_file``, with their quotas) a request
    must name one of them: PermissionDeniedError otherwise, the parameter's absence included,
    so that no request escapes the quotas by leaving it out.
    """
    if value is None or value == "":
        if known is None:
            return DEFAULT_TENANT
        raise PermissionDeniedError("field 'parameters.tenant': this helium model has a "
                                    "tenants_file, so every request must name one of its tenants")
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidWorkflowError("a tenant name is 1-64 letters, digits, '.', '_' or '-' "
                                   "starting with a letter or digit", field="parameters.tenant")
    if known is None:
        return tenant_named(value)
    if value not in known:
        raise PermissionDeniedError(f"field 'parameters.tenant': tenant {value!r} is not in "
                                    "this helium model's tenants_file")
    return known[value]


class TokenTable:
    """Bearer token -> Tenant, read from a tokens file.

    Tokens are kept only as SHA-256 digests and a presented token is looked up by its digest:
    no comparison runs over the secret itself, so its timing tells nothing about a token.
    """

    def __init__(self, by_digest: Mapping[bytes, Tenant]) -> None:
        self._by_digest = dict(by_digest)

    @classmethod
    def load(cls, path: str | Path) -> TokenTable:
        """Parse ``path``; ConfigError naming the file and entry when it is malformed."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"auth tokens file {str(path)!r}: {exc}") from None
        return cls(_parse(data, str(path)))

    def tenant_for(self, token: str) -> Tenant | None:
        return self._by_digest.get(hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest())

    @property
    def tenants(self) -> list[Tenant]:
        return list({t.name: t for t in self._by_digest.values()}.values())


def _parse(data, where: str) -> dict[bytes, Tenant]:
    if not isinstance(data, dict) or set(data) != {"tenants"} or not isinstance(
            data["tenants"], dict) or not data["tenants"]:
        raise ConfigError(f"auth tokens file {where!r}: expected one key 'tenants' mapping "
                          "tenant names to their tokens and limits")
    by_digest: dict[bytes, Tenant] = {}
    for name, entry in data["tenants"].items():
        tenant, digests = _parse_tenant(name, entry, where)
        for digest in digests:
            if digest in by_digest:
                raise ConfigError(f"auth tokens file {where!r}: tenant {name!r} repeats a token "
                                  f"of tenant {by_digest[digest].name!r}")
            by_digest[digest] = tenant
    return by_digest


def _parse_tenant(name, entry, where: str) -> tuple[Tenant, list[bytes]]:
    at = f"auth tokens file {where!r}, tenant {name!r}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{at}: a tenant name is 1-64 letters, digits, '.', '_' or '-'")
    if not isinstance(entry, dict):
        raise ConfigError(f"{at}: expected a mapping with 'tokens' and optional limits")
    unknown = set(entry) - {"tokens", *_LIMIT_KEYS}
    if unknown:
        raise ConfigError(f"{at}: unknown key(s) {sorted(map(str, unknown))}; known: tokens, "
                          + ", ".join(_LIMIT_KEYS))
    tokens = entry.get("tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ConfigError(f"{at}: 'tokens' must be a non-empty list")
    limits = {}
    for key in _LIMIT_KEYS:
        value = entry.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or (value < 0 and key != "max_priority")):
            raise ConfigError(f"{at}: {key!r} must be a whole number"
                              + ("" if key == "max_priority" else " >= 0"))
        limits[key] = value
    return tenant_named(name, TenantLimits(**limits)), [_digest(t, at) for t in tokens]


def _digest(token, at: str) -> bytes:
    if not isinstance(token, str):
        raise ConfigError(f"{at}: every token must be a string")
    found = _DIGEST.fullmatch(token)
    if found:
        return bytes.fromhex(found.group(1))
    if len(token) < MIN_TOKEN_CHARS or token != token.strip():
        raise ConfigError(f"{at}: a token must be at least {MIN_TOKEN_CHARS} characters without "
                          "surrounding spaces (a short token can be guessed)")
    return hashlib.sha256(token.encode()).digest()
