"""Placement at dispatch time (pure): uncached prefill against queued work, prefix overlap."""

import random

from helium_trt.scheduler.dispatch_cost import (
    StepCosts, WorkerQueue, choose_worker, common_prefix_len, num_pending_tokens,
    placement_cost, queued_work,
)

COSTS = StepCosts(decode_step=24.0, decode_sequence=1.0)


def test_the_worker_holding_the_prefix_wins_while_its_queue_is_light():
    queues = [WorkerQueue(), WorkerQueue(num_prefill_tokens=50)]
    # 300 of 320 prompt tokens resident on worker 1; worker 0 would compute them all.
    assert choose_worker([320, 20], 8, queues, COSTS) == 1


def test_queued_prefill_counts_in_full():
    # Worker 0 holds the 100-token prefix but has 500 prompt tokens queued before the call.
    # Divided by a batch capacity of 16 the queue looked like 31 tokens and worker 0 won,
    # leaving worker 1 idle; computed in full, recomputing the prefix on idle worker 1 is cheaper.
    queues = [WorkerQueue(num_prefill_tokens=500), WorkerQueue()]
    assert choose_worker([20, 120], 8, queues, COSTS) == 1


def test_decode_is_charged_per_step_and_a_short_call_rides_a_long_decode():
    busy = WorkerQueue(num_decode_tokens=64, max_decode_tokens=32)
    assert queued_work(busy, COSTS) == 24 * 32 + 64
    # A call decoding 8 tokens adds no steps to a worker already decoding 32 more ...
    assert placement_cost(0, 8, busy, COSTS) == queued_work(busy, COSTS) + 8
    # ... while one decoding 40 adds 8 steps.
    assert placement_cost(0, 40, busy, COSTS) == queued_work(busy, COSTS) + 24 * 8 + 40
    # With nothing cached anywhere, the idle worker wins over one with decode left.
    assert choose_worker([100, 100], 8, [busy, WorkerQueue()], COSTS) == 1


def test_ties_go_to_the_lowest_worker():
    assert choose_worker([10, 10, 10], 4, [WorkerQueue()] * 3) == 0


def test_common_prefix_len_matches_a_token_by_token_scan():
    rng = random.Random(0)
    for _ in range(300):
        a = tuple(rng.randrange(3) for _ in range(rng.randrange(0, 40)))
        b = a[:rng.randrange(0, len(a) + 1)] + tuple(rng.randrange(3)
                                                    for _ in range(rng.randrange(0, 10)))
        expected = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        assert common_prefix_len(a, b) == expected


def test_pending_tokens_are_whole_blocks_of_the_longest_queued_overlap():
    prompt = tuple(range(100))
    queued = [tuple(range(40)) + (999,), tuple(range(70)) + (5,), (7,) * 100]
    assert num_pending_tokens(prompt, queued, 16) == 64
    assert num_pending_tokens(prompt, [], 16) == 0
