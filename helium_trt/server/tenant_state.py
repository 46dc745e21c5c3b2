"""What HeliumCore keeps per tenant: its caches, its counters, its Warm registrations, and the
checks of its quotas.

Tenants share the engines and everything in RuntimeCaches that is not about results (the
worker boards of placement, for instance): a tenant's caches are the server's with a result
cache and output-length statistics of its own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from helium_trt.cache.prompt_cache import PromptResultCache
from helium_trt.errors import PermissionDeniedError, ResourceExhaustedError
from helium_trt.runtime.planning import RuntimeCaches
from helium_trt.runtime.events import RunStats
from helium_trt.scheduler import OutputLengths
from helium_trt.server.tenants import DEFAULT_TENANT, Tenant

# Tenants named by the Triton `helium` model's request parameter are not listed anywhere: keep
# the state of at most this many, dropping the least recently used idle one.
MAX_TENANT_STATES = 1024


@dataclass
class TenantCounters:
    num_runs: int = 0
    num_llm_calls: int = 0
    prefill_tokens_computed: int = 0
    prefill_tokens_reused: int = 0
    inflight_runs: int = 0

    def add(self, stats: RunStats) -> None:
        self.num_llm_calls += stats.num_llm_calls
        self.prefill_tokens_computed += stats.prefill_tokens_computed
        self.prefill_tokens_reused += stats.prefill_tokens_reused


@dataclass
class TenantState:
    tenant: Tenant
    caches: RuntimeCaches
    counters: TenantCounters = field(default_factory=TenantCounters)
    registered: dict[str, int] = field(default_factory=dict)  # workflow name -> prefixes kept

    def admit_run(self, priority: int) -> None:
        """Refuse a run past this tenant's quotas (before any work); else count it in flight."""
        limits, name = self.tenant.limits, self.tenant.name
        if limits.max_priority is not None and priority > limits.max_priority:
            raise PermissionDeniedError(
                f"field 'options.priority': {priority} is above the highest priority tenant "
                f"{name!r} may ask for ({limits.max_priority})")
        limit = limits.max_concurrent_runs
        if limit is not None and self.counters.inflight_runs >= limit:
            raise ResourceExhaustedError(
                f"tenant {name!r} already has {self.counters.inflight_runs} runs in flight, its "
                f"limit (max_concurrent_runs: {limit}); retry when one has finished")
        self.counters.num_runs += 1
        self.counters.inflight_runs += 1

    def check_registration(self, workflow_name: str) -> None:
        """Refuse a new Warm(keep=true) registration past this tenant's quota."""
        limit = self.tenant.limits.max_registered_workflows
        if limit is None or workflow_name in self.registered or len(self.registered) < limit:
            return
        raise ResourceExhaustedError(
            f"tenant {self.tenant.name!r} has registered {len(self.registered)} workflows, its "
            f"limit (max_registered_workflows: {limit})")


class TenantStates:
    """TenantState by tenant name, made on first use. The default tenant's caches are the
    server's own (``base``); every other tenant gets its own result cache of the same size."""

    def __init__(self, base: RuntimeCaches, max_states: int = MAX_TENANT_STATES) -> None:
        self._base = base
        self._max_states = max_states
        self._states: OrderedDict[str, TenantState] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant: Tenant) -> TenantState:
        with self._lock:
            state = self._states.get(tenant.name)
            if state is None:
                state = self._states[tenant.name] = TenantState(tenant, self._caches_for(tenant))
                self._drop_idle()
            elif state.tenant != tenant:
                state.tenant = tenant  # the tokens file was reloaded with new limits
            self._states.move_to_end(tenant.name)
            return state

    def all(self) -> list[TenantState]:
        with self._lock:
            return list(self._states.values())

    def _caches_for(self, tenant: Tenant) -> RuntimeCaches:
        if tenant.name == DEFAULT_TENANT.name and tenant.cache_salt is None:
            return self._base
        return replace(self._base, output_lengths=OutputLengths(),
                       prompt_cache=PromptResultCache(self._base.prompt_cache.max_bytes))

    def _drop_idle(self) -> None:
        for name in list(self._states):
            if len(self._states) <= self._max_states:
                return
            state = self._states[name]
            if not state.counters.inflight_runs and not state.registered:
                del self._states[name]
