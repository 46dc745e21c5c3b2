"""Per-request state inside the embedded engine: tokens, KV block table, progress, finish."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from helium_trt.engine.base import EngineRequest


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    """A request being served.

    ``token_ids`` is prompt + output so far. KV exists for the first ``num_computed_tokens`` of
    them; in decode the last sampled token is the one not yet computed. After a preemption the
    KV is dropped and everything (prompt and output so far) is prefilled again.
    """

    request: EngineRequest
    arrival: int
    token_ids: list[int]
    num_prompt_tokens: int
    block_table: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int | None = None
    num_inserted_blocks: int = 0
    status: SeqStatus = SeqStatus.WAITING
    finish_reason: str | None = None
    error: str | None = None
    num_preemptions: int = 0
    # (source, destination) KV block copy to run before this sequence's first chunk.
    pending_copy: tuple[int, int] | None = None
    # Opaque per-request state owned by the model runner (the sampling generator).
    sampler_state: object | None = None

    @classmethod
    def from_request(cls, request: EngineRequest, arrival: int) -> Sequence:
        prompt = list(request.prompt_token_ids)
        return cls(request=request, arrival=arrival, token_ids=prompt, num_prompt_tokens=len(prompt))

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def is_warm_only(self) -> bool:
        """Prefill-only (max_tokens == 0): no logits, no decoding."""
        return self.request.sampling.max_tokens == 0

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_decoding(self) -> bool:
        return self.num_computed_tokens == len(self.token_ids) - 1 and self.num_output_tokens > 0

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def waiting_key(self) -> tuple[int, int]:
        """Order of the waiting queue: higher request priority first, then arrival."""
        return (-self.request.priority, self.arrival)
