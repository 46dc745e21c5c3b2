"""Token-level reuse in the scheduler, without a model: an identical prompt in flight waits for
the running prefill and then copies its partly filled last block; different tails do not wait."""

from __future__ import annotations

from helium_trt.engine.base import EngineRequest, SamplingConfig
from helium_trt.engine.embedded.kv_manager import KVManager
from helium_trt.engine.embedded.scheduler import Scheduler, SchedulerConfig
from helium_trt.engine.embedded.sequence import Sequence

BS = 4


def _seq(request_id: str, prompt: list[int], arrival: int) -> Sequence:
    return Sequence.from_request(EngineRequest(request_id, tuple(prompt), SamplingConfig(max_tokens=8)),
                                 arrival)


def _complete_step(sched: Scheduler, out) -> None:
    for copy in out.block_copies:
        sched.kv.release_copy(copy)
    for chunk in out.prefills:
        done = chunk.completes_prompt
        chunk.seq.num_computed_tokens += chunk.num_tokens
        if done:
            chunk.seq.token_ids.append(7)
        sched.kv.cache_full_blocks(chunk.seq, now=1.0)


def test_an_identical_prompt_waits_for_the_prefill_and_copies_its_tail():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=8), KVManager(16, BS))
    prompt = list(range(10))  # two whole blocks and a 2-token tail
    leader, fork = _seq("leader", prompt, 0), _seq("fork", prompt, 1)
    sched.add(leader)
    sched.add(fork)
    out = sched.schedule(now=0.0)
    assert [c.seq.request_id for c in out.prefills] == ["leader"]  # fork waits: whole blocks ahead
    _complete_step(sched, out)
    out = sched.schedule(now=0.0)
    assert [(c.seq.request_id, c.num_tokens) for c in out.prefills] == [("leader", 2)]
    assert sched.num_waiting == 1  # only the tail is left to gain: still worth waiting for
    _complete_step(sched, out)
    out = sched.schedule(now=0.0)
    assert out.decodes == [leader]
    [chunk] = out.prefills
    assert (chunk.seq, chunk.num_tokens) == (fork, 1)  # 9 tokens reused, the last one computed
    assert out.block_copies == [(leader.block_table[2], fork.block_table[2])]
    assert fork.num_cached_tokens == 9


def test_a_prompt_that_differs_in_the_tail_does_not_wait():
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=8), KVManager(16, BS))
    leader = _seq("leader", list(range(10)), 0)
    sched.add(leader)
    _complete_step(sched, sched.schedule(now=0.0))  # 8 of 10 computed: two whole blocks cached
    other = _seq("other", list(range(8)) + [90, 91], 1)
    sched.add(other)
    out = sched.schedule(now=0.0)
    assert [(c.seq.request_id, c.num_tokens) for c in out.prefills] == [("leader", 2), ("other", 2)]
    assert other.num_cached_tokens == 8
