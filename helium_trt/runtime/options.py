"""Per-request run options: every optimization switchable (helium.v1.RunOptions as a dataclass)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from helium_trt.cache.public_prefixes import PublicPrefixes


@dataclass(frozen=True, slots=True)
class RunOptions:
    """``disabled_rules`` names optimizer rules to skip; the booleans are the runtime's switches.

    ``max_inflight`` bounds calls in flight per engine (1 = one call at a time).
    ``max_prompt_tokens`` is the server's cap on one LLM call's prompt (None: only the engine's
    context window); a client does not set it (helium.v1.RunOptions has no such field).
    ``max_calls`` caps the LLM calls the run may make, list fan-out included (checked at plan
    time); ``max_prompt_bytes`` caps one rendered prompt or formatted value, checked before it
    is tokenized. Both are server limits (None: none), like ``max_prompt_tokens``.
    ``tool_call_timeout_s``: how long a tool call may wait for its result before its row fails
    with DEADLINE_EXCEEDED (None: no limit; the server applies its default and cap).
    ``cache_salt`` keys the run's KV blocks apart from other tenants' (EngineRequest.cache_salt),
    except the leading tokens a prompt shares with one of ``public_prefixes``. Both are set by
    the server from the caller's tenant, never by a client.
    """

    disabled_rules: frozenset[str] = field(default_factory=frozenset)
    prompt_cache: bool = True
    cache_aware_scheduling: bool = True
    proactive_warming: bool = True
    retention_priorities: bool = True
    kv_prefix_reuse: bool = True
    stream_tokens: bool = False
    priority: int = 0
    deadline_ms: int | None = None
    max_inflight: int = 16
    max_prompt_tokens: int | None = None
    tool_call_timeout_s: float | None = None
    max_calls: int | None = None
    max_prompt_bytes: int | None = None
    cache_salt: str | None = None
    public_prefixes: PublicPrefixes | None = None

    def num_public_tokens(self, prompt) -> int:
        """Leading tokens of ``prompt`` keyed without the salt (a public prefix's)."""
        if self.cache_salt is None or self.public_prefixes is None:
            return 0
        return self.public_prefixes.num_public_tokens(prompt)


ALL_RULES = frozenset({"eliminate_dead_ops", "merge_identical_ops", "fold_constants",
                       "prune_switches", "fetch_cached_results"})


def naive_options(**overrides) -> RunOptions:
    """Every optimization off and one call at a time: the baseline of sequential LLM calls."""
    base = RunOptions(disabled_rules=ALL_RULES, prompt_cache=False, cache_aware_scheduling=False,
                      proactive_warming=False, retention_priorities=False, kv_prefix_reuse=False,
                      max_inflight=1)
    return replace(base, **overrides)
