"""The tokens file (serve --auth-tokens), the Triton tenant parameter and public prefixes."""

import hashlib

import pytest

from helium_trt.cache.public_prefixes import PublicPrefixes
from helium_trt.errors import ConfigError, InvalidWorkflowError
from helium_trt.server.tenants import (
    DEFAULT_TENANT, TenantLimits, TokenTable, tenant_from_parameter,
)

GOOD = """
tenants:
  team-a:
    tokens: ["a-long-random-token-aaaa", "sha256:%s"]
    max_concurrent_runs: 4
    max_registered_workflows: 0
    max_priority: -1
  team-b:
    tokens: ["a-long-random-token-bbbb"]
""" % hashlib.sha256(b"a-token-kept-as-a-digest").hexdigest()


def test_tokens_and_digests_map_to_their_tenant_with_its_limits(tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text(GOOD)
    table = TokenTable.load(path)
    a = table.tenant_for("a-long-random-token-aaaa")
    assert a is table.tenant_for("a-token-kept-as-a-digest")
    assert a.name == "team-a" and a.cache_salt == "tenant:team-a"
    assert a.limits == TenantLimits(4, 0, -1)
    assert table.tenant_for("a-long-random-token-bbbb").limits == TenantLimits()
    assert table.tenant_for("a-long-random-token-cccc") is None
    assert {t.name for t in table.tenants} == {"team-a", "team-b"}


@pytest.mark.parametrize("text, message", [
    ("tenants: {}", "expected one key 'tenants'"),
    ("users: {a: {tokens: [x]}}", "expected one key 'tenants'"),
    ("tenants: {'bad name': {tokens: [a-long-random-token-aaaa]}}", "a tenant name is"),
    ("tenants: {a: {tokens: [short]}}", "at least 16 characters"),
    ("tenants: {a: {tokens: []}}", "non-empty list"),
    ("tenants: {a: {tokens: [a-long-random-token-aaaa], max_runs: 1}}", "unknown key(s) ['max_runs']"),
    ("tenants: {a: {tokens: [a-long-random-token-aaaa], max_concurrent_runs: -1}}", ">= 0"),
    ("tenants: {a: {tokens: [a-long-random-token-aaaa], max_priority: 1.5}}", "whole number"),
    ("tenants: {a: {tokens: [a-long-random-token-aaaa]}, b: {tokens: [a-long-random-token-aaaa]}}",
     "repeats a token of tenant 'a'"),
    ("tenants: [", "auth tokens file"),
])
def test_a_malformed_tokens_file_names_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        TokenTable.load(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_the_triton_tenant_parameter():
    assert tenant_from_parameter(None) is DEFAULT_TENANT and DEFAULT_TENANT.cache_salt is None
    assert tenant_from_parameter("").name == "default"
    assert tenant_from_parameter("team-a").cache_salt == "tenant:team-a"
    with pytest.raises(InvalidWorkflowError, match="parameters.tenant"):
        tenant_from_parameter("../../etc")


def test_public_prefixes_give_the_longest_agreement():
    public = PublicPrefixes([(1, 2, 3, 4, 5), (1, 2, 9)])
    assert public.num_public_tokens((1, 2, 3, 4, 5, 6, 7)) == 5
    assert public.num_public_tokens((1, 2, 3, 8)) == 3
    assert public.num_public_tokens((1, 2, 9, 9)) == 3
    assert public.num_public_tokens((7, 1, 2)) == 0 and public.num_public_tokens(()) == 0
    public.add((7, 1))
    assert public.num_public_tokens((7, 1, 2)) == 2 and len(public) == 3
