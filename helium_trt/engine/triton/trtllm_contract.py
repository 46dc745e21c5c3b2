"""The tensorrtllm_backend tensor contract, as pure mappings between numpy tensor dicts and engine types.

Both sides of the Triton path use it: TritonEngine builds request tensors from an EngineRequest
and reads responses; the CPU stand-in model parses request tensors back into an EngineRequest and
builds response tensors. Nothing here imports tritonclient or pb_utils.

Shapes are the ones a client sends to the ``tensorrt_llm`` model (max_batch_size > 0, so every
tensor has a leading batch dimension of 1): scalars are [1, 1], vectors [1, n], stop / bad word
lists [1, 2, n]. Inputs a backend reshapes (``reshape: { shape: [ ] }``) arrive as [1]; the
parser accepts both. Semantics follow TensorRT-LLM:
- ``end_id`` ends generation and is not part of the output; -1 or absent means never end on it;
- ``stop_words_list`` row 0 is the concatenated token ids of all stop words, row 1 the exclusive
  end offset of each word, padded with -1; a stop word stays in the output;
- retention ranges ``[start, end)`` with end -1 = to the end of the prompt and duration -1 = no
  expiry; the backend reads the decode priority / duration only when range starts are present,
  so a decode-only retention is sent with zero ranges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from helium_trt.engine.base import (
    EngineRequest,
    RequestResult,
    RetentionRange,
    SamplingConfig,
)
from helium_trt.errors import InvalidRequestError

# Inputs (names and dtypes as in tensorrtllm_backend's tensorrt_llm/config.pbtxt).
INPUT_IDS = "input_ids"
INPUT_LENGTHS = "input_lengths"
REQUEST_OUTPUT_LEN = "request_output_len"
END_ID = "end_id"
PAD_ID = "pad_id"
STREAMING = "streaming"
STOP = "stop"
STOP_WORDS = "stop_words_list"
BAD_WORDS = "bad_words_list"
TEMPERATURE = "temperature"
TOP_K = "runtime_top_k"
TOP_P = "runtime_top_p"
SEED = "seed"
EXCLUDE_INPUT = "exclude_input_in_output"
RETURN_PERF_METRICS = "return_perf_metrics"
RETURN_NUM_INPUT_TOKENS = "return_num_input_tokens"
RETURN_NUM_OUTPUT_TOKENS = "return_num_output_tokens"
RETENTION_STARTS = "retention_token_range_starts"
RETENTION_ENDS = "retention_token_range_ends"
RETENTION_PRIORITIES = "retention_token_range_priorities"
RETENTION_DURATIONS = "retention_token_range_durations_ms"
RETENTION_DECODE_PRIORITY = "retention_decode_priority"
RETENTION_DECODE_DURATION = "retention_decode_duration_ms"

# Outputs.
OUTPUT_IDS = "output_ids"
SEQUENCE_LENGTH = "sequence_length"
KV_REUSED_BLOCKS = "kv_cache_reused_blocks"
KV_NEW_BLOCKS = "kv_cache_alloc_new_blocks"
KV_TOTAL_BLOCKS = "kv_cache_alloc_total_blocks"
NUM_INPUT_TOKENS = "num_input_tokens"
NUM_OUTPUT_TOKENS = "num_output_tokens"

NO_VALUE = -1  # "absent" inside INT32 tensors: no end id, no range end, no expiry


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A request as the tensors describe it, plus how the caller wants its responses."""

    request: EngineRequest
    end_id: int | None
    streaming: bool
    exclude_input: bool
    return_perf_metrics: bool
    return_num_input_tokens: bool
    return_num_output_tokens: bool
    is_stop: bool  # a TensorRT-LLM "stop" request: cancel the request with this id


@dataclass(frozen=True, slots=True)
class ResponseUpdate:
    """What one response carries: new tokens and, when reported, reused KV blocks."""

    token_ids: tuple[int, ...]
    num_reused_blocks: int | None


# ---- client side: EngineRequest -> tensors, response tensors -> update ---------------------------

def request_to_tensors(request: EngineRequest, end_id: int | None, pad_id: int,
                       extra_stop_token_ids: Sequence[int] = (), streaming: bool = True) -> dict[str, np.ndarray]:
    """Input tensors for ``request``. ``end_id`` None (or ignore_eos) never ends on a token."""
    s = request.sampling
    prompt = np.asarray([request.prompt_token_ids], dtype=np.int32)
    stop_ids = tuple(s.stop_token_ids) + (() if s.ignore_eos else tuple(extra_stop_token_ids))
    effective_end = NO_VALUE if s.ignore_eos or end_id is None else end_id
    tensors = {
        INPUT_IDS: prompt,
        INPUT_LENGTHS: _scalar(prompt.shape[1], np.int32),
        REQUEST_OUTPUT_LEN: _scalar(s.max_tokens, np.int32),
        END_ID: _scalar(effective_end, np.int32),
        PAD_ID: _scalar(pad_id, np.int32),
        STREAMING: _scalar(streaming, np.bool_),
        EXCLUDE_INPUT: _scalar(True, np.bool_),
        RETURN_PERF_METRICS: _scalar(True, np.bool_),
        TEMPERATURE: _scalar(s.temperature, np.float32),
        TOP_K: _scalar(s.top_k, np.int32),
        TOP_P: _scalar(s.top_p, np.float32),
    }
    if s.seed is not None:
        tensors[SEED] = _scalar(s.seed, np.uint64)
    words = [[t] for t in dict.fromkeys(stop_ids) if t != effective_end]
    if words:
        tensors[STOP_WORDS] = encode_word_list(words)
    tensors.update(retention_to_tensors(request))
    return tensors


def retention_to_tensors(request: EngineRequest) -> dict[str, np.ndarray]:
    """The six retention tensors, or none when the request sets no retention at all."""
    ranges = request.retention_ranges
    if not ranges and request.decode_retention_priority is None and request.decode_retention_duration_ms is None:
        return {}
    row = lambda values: np.asarray([values], dtype=np.int32).reshape(1, len(values))  # noqa: E731
    tensors = {
        RETENTION_STARTS: row([r.start for r in ranges]),
        RETENTION_ENDS: row([NO_VALUE if r.end is None else r.end for r in ranges]),
        RETENTION_PRIORITIES: row([r.priority for r in ranges]),
        RETENTION_DURATIONS: row([NO_VALUE if r.duration_ms is None else r.duration_ms for r in ranges]),
    }
    if request.decode_retention_priority is not None:
        tensors[RETENTION_DECODE_PRIORITY] = _scalar(request.decode_retention_priority, np.int32)
    if request.decode_retention_duration_ms is not None:
        tensors[RETENTION_DECODE_DURATION] = _scalar(request.decode_retention_duration_ms, np.int32)
    return tensors


def response_to_update(outputs: Mapping[str, np.ndarray]) -> ResponseUpdate:
    """New tokens (beam 0, cut at sequence_length) and the reused-block count if present."""
    token_ids: tuple[int, ...] = ()
    ids = outputs.get(OUTPUT_IDS)
    if ids is not None and ids.size:
        beam = np.asarray(ids).reshape(-1, ids.shape[-1])[0]
        length = outputs.get(SEQUENCE_LENGTH)
        n = int(np.asarray(length).reshape(-1)[0]) if length is not None and length.size else beam.size
        token_ids = tuple(int(t) for t in beam[: max(0, n)])
    reused = outputs.get(KV_REUSED_BLOCKS)
    num_reused = int(np.asarray(reused).reshape(-1)[0]) if reused is not None and reused.size else None
    return ResponseUpdate(token_ids, num_reused)


def encode_word_list(words: Sequence[Sequence[int]]) -> np.ndarray:
    """TensorRT-LLM's [1, 2, n] word list: flat ids, then end offsets padded with -1."""
    flat = [t for word in words for t in word]
    offsets = list(np.cumsum([len(word) for word in words]))
    width = max(len(flat), len(offsets))
    rows = np.full((1, 2, width), NO_VALUE, dtype=np.int32)
    rows[0, 0, : len(flat)] = flat
    rows[0, 1, : len(offsets)] = offsets
    return rows


def decode_word_list(tensor: np.ndarray, name: str = STOP_WORDS) -> list[tuple[int, ...]]:
    """Inverse of encode_word_list; raises InvalidRequestError naming ``name`` if malformed."""
    rows = np.asarray(tensor)
    if rows.ndim == 3 and rows.shape[0] == 1:
        rows = rows[0]
    if rows.ndim != 2 or rows.shape[0] != 2:
        raise InvalidRequestError(f"{name}: expected shape [1, 2, n], got {list(np.shape(tensor))}")
    flat, offsets = rows[0].tolist(), [int(o) for o in rows[1] if o >= 0]
    words, start = [], 0
    for end in offsets:
        if end <= start or end > len(flat):
            raise InvalidRequestError(f"{name}: offset {end} is not increasing within {len(flat)} ids")
        words.append(tuple(int(t) for t in flat[start:end]))
        start = end
    return words


# ---- server side: tensors -> ParsedRequest, results -> response tensors -------------------------

def tensors_to_request(tensors: Mapping[str, np.ndarray], request_id: str,
                       decode: Callable[[Sequence[int]], str] | None = None,
                       default_exclude_input: bool = True) -> ParsedRequest:
    """Parse request tensors; raises InvalidRequestError naming the offending tensor.

    ``decode`` turns multi-token stop words into stop strings (the embedded engine matches those
    on text); without it such words are rejected.
    """
    is_stop = _optional_scalar(tensors, STOP, bool, False)
    prompt = _vector(tensors, INPUT_IDS, required=not is_stop)
    if INPUT_LENGTHS in tensors and (n := _scalar_of(tensors, INPUT_LENGTHS, int)) != len(prompt):
        raise InvalidRequestError(f"{INPUT_LENGTHS}: says {n} tokens, {INPUT_IDS} has {len(prompt)}")
    if BAD_WORDS in tensors and decode_word_list(tensors[BAD_WORDS], BAD_WORDS):
        raise InvalidRequestError(f"{BAD_WORDS}: not supported by the CPU stand-in")
    end_id = _optional_scalar(tensors, END_ID, int, NO_VALUE)
    end_id = None if end_id == NO_VALUE else end_id
    stop_ids, stop_strings = _stop_words(tensors, decode)
    seed = _optional_scalar(tensors, SEED, int, None)
    sampling = SamplingConfig(
        max_tokens=_scalar_of(tensors, REQUEST_OUTPUT_LEN, int) if not is_stop else 0,
        temperature=_optional_scalar(tensors, TEMPERATURE, float, 0.0),
        top_p=_optional_scalar(tensors, TOP_P, float, 1.0),
        top_k=_optional_scalar(tensors, TOP_K, int, 0),
        seed=seed,
        stop_strings=stop_strings,
        stop_token_ids=stop_ids + ((end_id,) if end_id is not None else ()),
        ignore_eos=True,  # only end_id and stop words end a TensorRT-LLM request
    )
    ranges, decode_priority, decode_duration = _retention(tensors)
    request = EngineRequest(
        request_id=request_id, prompt_token_ids=tuple(prompt), sampling=sampling,
        retention_ranges=ranges, decode_retention_priority=decode_priority,
        decode_retention_duration_ms=decode_duration,
    )
    return ParsedRequest(
        request=request, end_id=end_id,
        streaming=_optional_scalar(tensors, STREAMING, bool, False),
        exclude_input=_optional_scalar(tensors, EXCLUDE_INPUT, bool, default_exclude_input),
        return_perf_metrics=_optional_scalar(tensors, RETURN_PERF_METRICS, bool, False),
        return_num_input_tokens=_optional_scalar(tensors, RETURN_NUM_INPUT_TOKENS, bool, False),
        return_num_output_tokens=_optional_scalar(tensors, RETURN_NUM_OUTPUT_TOKENS, bool, False),
        is_stop=is_stop,
    )


def tokens_to_tensors(token_ids: Sequence[int]) -> dict[str, np.ndarray]:
    """output_ids [1, 1, n] and sequence_length [1, 1] for one response."""
    ids = np.asarray(token_ids, dtype=np.int32).reshape(1, 1, len(token_ids))
    return {OUTPUT_IDS: ids, SEQUENCE_LENGTH: np.asarray([[len(token_ids)]], dtype=np.int32)}


def perf_tensors(result: RequestResult, block_size: int, parsed: ParsedRequest) -> dict[str, np.ndarray]:
    """The outputs ``parsed`` asked for about a finished request: KV-cache block counts
    (return_perf_metrics) and token counts (return_num_input_tokens / _output_tokens)."""
    values = {}
    if parsed.return_perf_metrics:
        total_blocks = -(-(result.num_prompt_tokens + len(result.output_token_ids)) // block_size)
        reused = result.num_cached_tokens // block_size
        values.update({KV_REUSED_BLOCKS: reused, KV_NEW_BLOCKS: total_blocks - reused, KV_TOTAL_BLOCKS: total_blocks})
    if parsed.return_num_input_tokens:
        values[NUM_INPUT_TOKENS] = result.num_prompt_tokens
    if parsed.return_num_output_tokens:
        values[NUM_OUTPUT_TOKENS] = len(result.output_token_ids)
    return {name: np.asarray([[v]], dtype=np.int32) for name, v in values.items()}


# ---- helpers ------------------------------------------------------------------------------------

def _scalar(value, dtype) -> np.ndarray:
    return np.asarray([[value]], dtype=dtype)


def _vector(tensors: Mapping[str, np.ndarray], name: str, required: bool = True) -> list[int]:
    if name not in tensors:
        if required:
            raise InvalidRequestError(f"{name}: required input is missing")
        return []
    array = np.asarray(tensors[name])
    if array.ndim == 2 and array.shape[0] != 1:
        raise InvalidRequestError(f"{name}: batch size {array.shape[0]}, the stand-in serves one sequence per request")
    return [int(v) for v in array.reshape(-1)]


def _scalar_of(tensors: Mapping[str, np.ndarray], name: str, kind: type):
    if name not in tensors:
        raise InvalidRequestError(f"{name}: required input is missing")
    array = np.asarray(tensors[name]).reshape(-1)
    if array.size != 1:
        raise InvalidRequestError(f"{name}: expected one value, got {array.size}")
    return kind(array[0].item())


def _optional_scalar(tensors: Mapping[str, np.ndarray], name: str, kind: type, default):
    return _scalar_of(tensors, name, kind) if name in tensors else default


def _stop_words(tensors, decode) -> tuple[tuple[int, ...], tuple[str, ...]]:
    if STOP_WORDS not in tensors:
        return (), ()
    ids, strings = [], []
    for word in decode_word_list(tensors[STOP_WORDS]):
        if len(word) == 1:
            ids.append(word[0])
        elif decode is None:
            raise InvalidRequestError(f"{STOP_WORDS}: multi-token stop words need a tokenizer")
        else:
            strings.append(decode(word))
    return tuple(ids), tuple(strings)


def _retention(tensors) -> tuple[tuple[RetentionRange, ...], int | None, int | None]:
    if RETENTION_STARTS not in tensors:
        return (), None, None  # as in the backend: nothing else is read without range starts
    starts = _vector(tensors, RETENTION_STARTS)
    columns = {}
    for name, required in ((RETENTION_ENDS, True), (RETENTION_PRIORITIES, True), (RETENTION_DURATIONS, False)):
        if name not in tensors and not required:
            continue
        values = _vector(tensors, name)
        if len(values) != len(starts):
            raise InvalidRequestError(f"{name}: {len(values)} values for {len(starts)} {RETENTION_STARTS}")
        columns[name] = values
    durations = columns.get(RETENTION_DURATIONS, [NO_VALUE] * len(starts))
    ranges = tuple(
        RetentionRange(start, None if end == NO_VALUE else end, priority, None if d == NO_VALUE else d)
        for start, end, priority, d in zip(starts, columns[RETENTION_ENDS], columns[RETENTION_PRIORITIES], durations)
    )
    decode_priority = _optional_scalar(tensors, RETENTION_DECODE_PRIORITY, int, None)
    decode_duration = _optional_scalar(tensors, RETENTION_DECODE_DURATION, int, None)
    return ranges, decode_priority, decode_duration

