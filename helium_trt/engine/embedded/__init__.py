"""The embedded CPU engine: a real transformer with paged KV, prefix reuse, retention priorities
and continuous batching (engine.py: EmbeddedEngine; core/scheduler/kv_manager: the step loop and
its bookkeeping; model/runner/native: the forward pass)."""
