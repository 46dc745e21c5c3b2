"""Up-front checks of an EngineRequest, so a bad request fails before anything is queued."""

from __future__ import annotations

from helium_trt.engine.base import (
    MAX_RETENTION_PRIORITY,
    MIN_RETENTION_PRIORITY,
    EngineInfo,
    EngineRequest,
)
from helium_trt.errors import InvalidRequestError, ResourceExhaustedError


def validate_request(request: EngineRequest, info: EngineInfo, model_vocab_size: int) -> None:
    """Raise InvalidRequestError (or ResourceExhaustedError) naming the first problem found."""
    rid = request.request_id
    prompt = request.prompt_token_ids
    if not prompt:
        raise InvalidRequestError(f"request {rid!r}: prompt_token_ids is empty")
    bad = [t for t in prompt if not isinstance(t, int) or t < 0 or t >= model_vocab_size]
    if bad:
        raise InvalidRequestError(
            f"request {rid!r}: prompt_token_ids holds {len(bad)} id(s) outside the vocabulary "
            f"[0, {model_vocab_size}), first {bad[0]!r}"
        )
    _validate_sampling(request)
    _validate_retention(request)
    max_len = info.max_model_len
    if len(prompt) > max_len:
        raise InvalidRequestError(
            f"request {rid!r}: prompt has {len(prompt)} tokens, over the context window of {max_len}"
        )
    total = len(prompt) + request.sampling.max_tokens
    if total > max_len:
        raise InvalidRequestError(
            f"request {rid!r}: prompt ({len(prompt)} tokens) + max_tokens "
            f"({request.sampling.max_tokens}) = {total} does not fit the context window of {max_len}"
        )
    num_blocks = -(-total // info.block_size)
    if num_blocks > info.num_blocks:
        raise ResourceExhaustedError(
            f"request {rid!r}: needs {num_blocks} KV blocks, the pool has {info.num_blocks}"
        )


def _validate_sampling(request: EngineRequest) -> None:
    s, rid = request.sampling, request.request_id
    problems = []
    if s.max_tokens < 0:
        problems.append(f"max_tokens must be >= 0, got {s.max_tokens}")
    if s.temperature < 0:
        problems.append(f"temperature must be >= 0, got {s.temperature}")
    if not 0.0 < s.top_p <= 1.0:
        problems.append(f"top_p must be in (0, 1], got {s.top_p}")
    if s.top_k < 0:
        problems.append(f"top_k must be >= 0, got {s.top_k}")
    if problems:
        raise InvalidRequestError(f"request {rid!r}: sampling.{problems[0]}")


def _validate_retention(request: EngineRequest) -> None:
    rid = request.request_id
    priorities = [r.priority for r in request.retention_ranges]
    if request.decode_retention_priority is not None:
        priorities.append(request.decode_retention_priority)
    for priority in priorities:
        if not MIN_RETENTION_PRIORITY <= priority <= MAX_RETENTION_PRIORITY:
            raise InvalidRequestError(
                f"request {rid!r}: retention priority {priority} outside "
                f"[{MIN_RETENTION_PRIORITY}, {MAX_RETENTION_PRIORITY}]"
            )
    for rng in request.retention_ranges:
        if rng.start < 0 or (rng.end is not None and rng.end < rng.start):
            raise InvalidRequestError(f"request {rid!r}: bad retention range [{rng.start}, {rng.end})")
