"""The Triton / TensorRT-LLM path: the client engine (client.py: TritonEngine over gRPC or BLS),
the tensorrt_llm tensor contract, and the CPU stand-in that serves it (with its KV metrics)."""
