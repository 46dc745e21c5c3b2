"""The embedded CPU engine: a real transformer with paged KV, prefix reuse, retention priorities
and continuous batching (engine.py: EmbeddedEngine; core/scheduler/kv_manager: the step loop and
its bookkeeping; model/runner/native: the forward pass)."""


def __getattr__(name: str):
    # NOTE: lazy, so that importing the torch-free parts (scheduler, kv_manager, sequence) loads
    # no torch; ``from helium_trt.engine.embedded import EmbeddedEngine`` still works.
    if name == "EmbeddedEngine":
        from helium_trt.engine.embedded.engine import EmbeddedEngine

        return EmbeddedEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
