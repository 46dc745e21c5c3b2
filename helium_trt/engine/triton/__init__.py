"""The Triton / TensorRT-LLM path: the client engine (client.py: TritonEngine over gRPC or BLS),
the tensorrt_llm tensor contract, and the CPU stand-in that serves it (with its KV metrics)."""


def __getattr__(name: str):
    # NOTE: lazy, so that the stand-in and the contract load without tritonclient;
    # ``from helium_trt.engine.triton import TritonEngine, TritonEngineConfig`` still works.
    if name in ("TritonEngine", "TritonEngineConfig"):
        from helium_trt.engine.triton import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
