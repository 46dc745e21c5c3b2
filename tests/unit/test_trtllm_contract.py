"""Pure mapping between EngineRequest and tensorrt_llm tensors: round trips, word lists, errors."""

from __future__ import annotations

import numpy as np
import pytest

from helium_trt.engine.base import EngineRequest, RequestResult, RetentionRange, SamplingConfig
from helium_trt.engine.triton.trtllm_contract import (
    decode_word_list,
    encode_word_list,
    perf_tensors,
    request_to_tensors,
    response_to_update,
    tensors_to_request,
    tokens_to_tensors,
)
from helium_trt.errors import InvalidRequestError


def as_received(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the backend sees: inputs declared with ``reshape: { shape: [ ] }`` lose a dim."""
    reshaped = {"input_lengths", "request_output_len", "end_id", "pad_id", "temperature", "runtime_top_k",
                "runtime_top_p", "seed", "streaming", "exclude_input_in_output", "return_perf_metrics"}
    return {name: a.reshape(a.shape[0]) if name in reshaped else a for name, a in tensors.items()}


def test_request_round_trips_through_tensors():
    request = EngineRequest(
        "r1", (5, 6, 7, 8, 9),
        SamplingConfig(max_tokens=7, temperature=0.5, top_p=0.9, top_k=4, seed=11, stop_token_ids=(42,)),
        retention_ranges=(RetentionRange(0, 4, 90, 1000), RetentionRange(4, None, 20)),
        decode_retention_priority=15, decode_retention_duration_ms=300,
    )
    tensors = request_to_tensors(request, end_id=2, pad_id=0, extra_stop_token_ids=(3,))
    parsed = tensors_to_request(as_received(tensors), "r1")
    got = parsed.request
    assert got.prompt_token_ids == request.prompt_token_ids
    assert got.retention_ranges == request.retention_ranges
    assert (got.decode_retention_priority, got.decode_retention_duration_ms) == (15, 300)
    assert (got.sampling.max_tokens, got.sampling.top_k, got.sampling.seed) == (7, 4, 11)
    assert got.sampling.temperature == pytest.approx(0.5) and got.sampling.top_p == pytest.approx(0.9)
    # end_id ends the request; the extra EOS and the stop token travel as stop words.
    assert parsed.end_id == 2 and set(got.sampling.stop_token_ids) == {42, 3, 2}
    assert parsed.streaming and parsed.exclude_input and parsed.return_perf_metrics and not parsed.is_stop


def test_ignore_eos_sends_no_end_id_and_no_eos_stop_words():
    request = EngineRequest("r", (1, 2), SamplingConfig(max_tokens=3, ignore_eos=True))
    tensors = request_to_tensors(request, end_id=2, pad_id=0, extra_stop_token_ids=(3,))
    assert tensors["end_id"].tolist() == [[-1]] and "stop_words_list" not in tensors
    assert tensors_to_request(tensors, "r").end_id is None


def test_no_retention_sends_no_retention_tensors_and_decode_only_sends_empty_ranges():
    plain = request_to_tensors(EngineRequest("a", (1,), SamplingConfig()), 2, 0)
    assert not [name for name in plain if name.startswith("retention")]
    decode_only = request_to_tensors(EngineRequest("b", (1,), decode_retention_priority=70), 2, 0)
    assert decode_only["retention_token_range_starts"].shape == (1, 0)
    assert tensors_to_request(decode_only, "b").request.decode_retention_priority == 70


def test_word_lists_encode_offsets_and_decode_back():
    encoded = encode_word_list([[7], [8, 9], [10]])
    assert encoded.tolist() == [[[7, 8, 9, 10], [1, 3, 4, -1]]]
    assert decode_word_list(encoded) == [(7,), (8, 9), (10,)]
    with pytest.raises(InvalidRequestError, match="stop_words_list"):
        decode_word_list(np.asarray([[[1, 2], [3, -1]]], dtype=np.int32))


def test_multi_token_stop_words_become_stop_strings_with_a_decoder():
    tensors = {"input_ids": np.asarray([[1, 2]], np.int32), "request_output_len": np.asarray([4], np.int32),
               "stop_words_list": encode_word_list([[8, 9]])}
    parsed = tensors_to_request(tensors, "r", decode=lambda ids: "-".join(map(str, ids)))
    assert parsed.request.sampling.stop_strings == ("8-9",)
    with pytest.raises(InvalidRequestError, match="need a tokenizer"):
        tensors_to_request(tensors, "r")


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("request_output_len"), "request_output_len: required input is missing"),
    (lambda t: t.pop("input_ids"), "input_ids: required input is missing"),
    (lambda t: t.update(input_lengths=np.asarray([9], np.int32)), "input_lengths: says 9 tokens"),
    (lambda t: t.update(retention_token_range_starts=np.asarray([[0, 1]], np.int32),
                        retention_token_range_ends=np.asarray([[1]], np.int32)), "retention_token_range_ends"),
    (lambda t: t.update(bad_words_list=encode_word_list([[5]])), "bad_words_list"),
])
def test_malformed_tensors_name_the_offending_input(change, message):
    tensors = {"input_ids": np.asarray([[1, 2, 3]], np.int32), "input_lengths": np.asarray([3], np.int32),
               "request_output_len": np.asarray([4], np.int32)}
    change(tensors)
    with pytest.raises(InvalidRequestError, match=message):
        tensors_to_request(tensors, "r")


def test_responses_map_back_to_tokens_and_reused_blocks():
    tensors = tokens_to_tensors([4, 5, 6])
    assert tensors["output_ids"].shape == (1, 1, 3)
    result = RequestResult("r", (4, 5, 6), "", 40, 32, 8, "length")
    parsed = tensors_to_request({"input_ids": np.zeros((1, 40), np.int32), "request_output_len": np.asarray([3]),
                                 "return_perf_metrics": np.asarray([True])}, "r")
    tensors.update(perf_tensors(result, 16, parsed))
    assert "num_output_tokens" not in tensors  # only with return_num_output_tokens
    update = response_to_update(tensors)
    assert update.token_ids == (4, 5, 6) and update.num_reused_blocks == 2
    assert tensors["kv_cache_alloc_total_blocks"].tolist() == [[3]]  # ceil(43 / 16)
    assert response_to_update({}).token_ids == () and response_to_update({}).num_reused_blocks is None
