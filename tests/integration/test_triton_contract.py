"""The tensorrt_llm tensor contract on the wire: what the stand-in receives, and how errors come back.

Retention tensors are checked exactly as the stand-in recorded them after Triton delivered them,
so these tests see the bytes TensorRT-LLM would get.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio

from engine_helpers import collect
from helium_trt.engine.base import EngineRequest, RetentionRange, SamplingConfig
from helium_trt.engine.triton.client import TritonEngine, TritonEngineConfig
from helium_trt.errors import EngineUnavailableError, InvalidRequestError, ModelNotFoundError
from helium_trt.server.triton_launcher import pick_free_port

pytestmark = pytest.mark.slow


def send(deployment, request: EngineRequest, **config):
    async def main():
        engine = await TritonEngine.connect(deployment.engine_config(**config))
        try:
            return await collect(engine, request)
        finally:
            await engine.close()

    return asyncio.run(main())[1]


def send_raw(deployment, request_id: str, tensors: dict[str, np.ndarray]) -> list:
    """Send hand-built tensors (no TritonEngine checks); returns (outputs, error) per response."""
    async def main():
        client = grpcclient_aio.InferenceServerClient(deployment.grpc_url)
        inputs = []
        for name, array in tensors.items():
            tensor = grpcclient.InferInput(name, list(array.shape), grpcclient.np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)

        async def one():
            yield {"model_name": "tensorrt_llm", "inputs": inputs, "request_id": request_id}

        responses = []
        try:
            async for result, error in client.stream_infer(one()):
                if error is not None:
                    responses.append((None, error.message()))
                    break
                response = result.get_response()
                responses.append(({o.name: result.as_numpy(o.name) for o in response.outputs}, None))
                # read on to the end of the stream: the server closes it after the final response
        finally:
            await client.close()
        return responses

    return asyncio.run(main())


def scalar(value, dtype) -> np.ndarray:
    return np.asarray([[value]], dtype=dtype)


def base_tensors(prompt) -> dict[str, np.ndarray]:
    return {"input_ids": np.asarray([prompt], dtype=np.int32), "input_lengths": scalar(len(prompt), np.int32),
            "request_output_len": scalar(2, np.int32)}


def test_retention_tensors_arrive_exactly_as_sent(triton_server):
    request = EngineRequest(
        "retention-1", tuple(range(40, 90)), SamplingConfig(max_tokens=2),
        retention_ranges=(RetentionRange(0, 32, 90, 30_000), RetentionRange(32, None, 10)),
        decode_retention_priority=5, decode_retention_duration_ms=250,
    )
    result = send(triton_server, request)
    assert result.finish_reason == "length", result.error
    received = triton_server.recorded_inputs("retention-1")
    expected = {
        "retention_token_range_starts": [[0, 32]],
        "retention_token_range_ends": [[32, -1]],
        "retention_token_range_priorities": [[90, 10]],
        "retention_token_range_durations_ms": [[30_000, -1]],
        "retention_decode_priority": [[5]],
        "retention_decode_duration_ms": [[250]],
    }
    for name, values in expected.items():
        assert received[name]["dtype"] == "int32", name
        assert received[name]["values"] == values, name


def test_decode_only_retention_is_sent_with_zero_ranges(triton_server):
    request = EngineRequest("retention-decode-only", tuple(range(40, 60)), SamplingConfig(max_tokens=1),
                            decode_retention_priority=80)
    assert send(triton_server, request).error is None
    received = triton_server.recorded_inputs("retention-decode-only")
    assert received["retention_token_range_starts"]["shape"] == [1, 0]
    assert received["retention_decode_priority"]["values"] == [[80]]
    assert "retention_decode_duration_ms" not in received


def test_request_tensors_have_the_tensorrt_llm_names_and_dtypes(triton_server):
    request = EngineRequest("contract-1", (5, 6, 7, 8), SamplingConfig(
        max_tokens=3, temperature=0.5, top_p=0.9, top_k=7, seed=42, stop_token_ids=(99,)))
    assert send(triton_server, request).error is None
    received = triton_server.recorded_inputs("contract-1")
    dtypes = {name: entry["dtype"] for name, entry in received.items()}
    assert dtypes == {
        "input_ids": "int32", "input_lengths": "int32", "request_output_len": "int32",
        "end_id": "int32", "pad_id": "int32", "streaming": "bool", "exclude_input_in_output": "bool",
        "return_perf_metrics": "bool", "temperature": "float32", "runtime_top_k": "int32",
        "runtime_top_p": "float32", "seed": "uint64", "stop_words_list": "int32",
    }
    assert received["input_ids"]["values"] == [[5, 6, 7, 8]]
    assert received["request_output_len"]["values"] == [3]  # reshaped to [] per batch item
    assert received["stop_words_list"]["values"] == [[[99], [1]]]
    assert received["seed"]["values"] == [42]


def test_server_side_rejection_names_the_problem(triton_server):
    if not triton_server.is_standin:
        pytest.skip("the error text is the stand-in's")
    responses = send_raw(triton_server, "raw-oov", base_tensors([5, 6, 5000]))
    [(outputs, error)] = responses
    assert outputs is None
    assert "InvalidRequestError" in error and "outside the vocabulary" in error and "5000" in error


def test_mismatched_retention_lengths_are_rejected(triton_server):
    tensors = base_tensors([5, 6, 7]) | {
        "retention_token_range_starts": np.asarray([[0, 2]], dtype=np.int32),
        "retention_token_range_ends": np.asarray([[2, -1]], dtype=np.int32),
        "retention_token_range_priorities": np.asarray([[50]], dtype=np.int32),
    }
    [(_, error)] = send_raw(triton_server, "raw-retention", tensors)
    assert "retention_token_range_priorities" in error
    if triton_server.is_standin:
        assert "1 values for 2" in error


def test_missing_required_input_is_rejected_by_triton(triton_server):
    tensors = base_tensors([5, 6, 7])
    del tensors["request_output_len"]
    [(_, error)] = send_raw(triton_server, "raw-missing", tensors)
    assert "request_output_len" in error


def test_raw_streaming_response_carries_perf_outputs_on_the_final_response(triton_server):
    tensors = base_tensors([5, 6, 7, 8]) | {
        "streaming": scalar(True, np.bool_), "return_perf_metrics": scalar(True, np.bool_),
        "return_num_input_tokens": scalar(True, np.bool_), "return_num_output_tokens": scalar(True, np.bool_),
        "end_id": scalar(-1, np.int32), "request_output_len": scalar(3, np.int32)}
    responses = send_raw(triton_server, "raw-perf", tensors)
    assert [error for _, error in responses] == [None] * len(responses)
    assert [out["output_ids"].shape for out, _ in responses] == [(1, 1, 1)] * 3
    final = responses[-1][0]
    assert final["num_output_tokens"].tolist() == [[3]] and final["num_input_tokens"].tolist() == [[4]]
    assert final["kv_cache_alloc_total_blocks"].tolist() == [[1]]


def test_errors_after_start_end_the_stream_with_an_error_result(triton_server):
    """A request the client accepts (it believes in a longer context) but the server refuses."""
    if not triton_server.is_standin:
        pytest.skip("the GPU model's context window differs")
    request = EngineRequest("too-long", tuple([7] * 1000), SamplingConfig(max_tokens=100))
    result = send(triton_server, request, max_model_len=4096)
    assert result.finish_reason == "error"
    assert "context window" in result.error and result.output_token_ids == ()


def test_client_side_validation_raises_before_sending(triton_server):
    async def main():
        engine = await TritonEngine.connect(triton_server.engine_config())
        try:
            with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
                engine.generate(EngineRequest("never-sent", (5, 10**6), SamplingConfig(max_tokens=1)))
        finally:
            await engine.close()

    asyncio.run(main())
    if triton_server.is_standin:
        entries = triton_server.record_path.read_text() if triton_server.record_path.exists() else ""
        assert '"never-sent"' not in entries


def test_connect_reports_unknown_model_and_unreachable_server(triton_server):
    with pytest.raises(ModelNotFoundError, match="no_such_model"):
        asyncio.run(TritonEngine.connect(triton_server.engine_config(model_name="no_such_model")))
    closed = TritonEngineConfig(url=f"127.0.0.1:{pick_free_port()}", tokenizer_dir=str(triton_server.model_dir))
    with pytest.raises(EngineUnavailableError, match="127.0.0.1"):
        asyncio.run(TritonEngine.connect(closed))


def test_a_stop_request_cancels_the_request_with_that_id(triton_server):
    """TensorRT-LLM's legacy cancel: a second request with the same id and stop=true."""
    if not triton_server.is_standin:
        pytest.skip("request-id based stop needs numeric ids on some TensorRT-LLM versions")
    stop_tensors = {"input_lengths": scalar(0, np.int32), "request_output_len": scalar(0, np.int32),
                    "stop": scalar(True, np.bool_)}

    async def main():
        engine = await TritonEngine.connect(triton_server.engine_config())
        try:
            request = EngineRequest("stop-me", tuple(range(30, 60)), SamplingConfig(max_tokens=900, ignore_eos=True))
            num_seen, stop_responses = 0, None
            async for item in engine.generate(request):
                num_seen += 1
                if num_seen == 3:
                    stop_responses = await asyncio.to_thread(send_raw, triton_server, "stop-me", stop_tensors)
            return item, stop_responses
        finally:
            await engine.close()

    result, stop_responses = asyncio.run(main())
    assert [error for _, error in stop_responses if error is not None] == []  # an empty final response
    assert result.finish_reason == "stop" and len(result.output_token_ids) < 900
