"""A run (or Explain) cancelled while it is still planning stops its planning thread at the next
prompt instead of rendering and tokenizing every row's prompts for nobody.

Planning is held at a known point: the engine tokenizer's ``encode_prompt`` blocks every
planning thread at its first prompt until the test releases it, and the test releases it only
once each held plan's cancel token is set. Each cancelled plan must then end with
PlanningCancelled having tokenized only the held prompt (of 64). No timing is asserted: the
waits are conditions with a generous liveness bound.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import json_format

from helium_trt.api.convert import rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc, workflow_pb2
from helium_trt.runtime import planning, workflow as workflow_module
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.workflow import run_workflow
from helium_trt.server import core as core_module

from runtime_helpers import make_engine
from test_server_cancel_and_failure import in_process_server

LIVENESS_S = 60.0
NUM_ROWS = 64


class PromptGate:
    """Holds every prompt tokenized while not ``release``d (each planning thread stops at its
    first), and counts the prompts tokenized."""

    def __init__(self, monkeypatch, tokenizer) -> None:
        self.release = threading.Event()
        self.num_prompts = 0
        self.num_held = 0
        self._cond = threading.Condition()
        real = tokenizer.encode_prompt

        def encode_prompt(text, memo=None):
            with self._cond:
                self.num_prompts += 1
                if not self.release.is_set():
                    self.num_held += 1
                    self._cond.notify_all()
            assert self.release.wait(LIVENESS_S), "the gate was never released"
            return real(text, memo)

        monkeypatch.setattr(tokenizer, "encode_prompt", encode_prompt)

    def wait_held(self, num_held: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.num_held >= num_held, LIVENESS_S), \
                f"{self.num_held} of {num_held} plans reached the gate"


class PlanningRecord:
    """Every prepare_run the runtime and the server start: its cancel token and how it ended."""

    def __init__(self, monkeypatch) -> None:
        self.tokens: list = []
        self.outcomes: list[str] = []
        self._cond = threading.Condition()
        real = planning.prepare_run

        def prepare_run(*args, cancel=None, **kwargs):
            with self._cond:
                self.tokens.append(cancel)
            outcome = "planned"
            try:
                return real(*args, cancel=cancel, **kwargs)
            except BaseException as exc:
                outcome = type(exc).__name__
                raise
            finally:
                with self._cond:
                    self.outcomes.append(outcome)
                    self._cond.notify_all()

        monkeypatch.setattr(workflow_module, "prepare_run", prepare_run)
        monkeypatch.setattr(core_module, "prepare_run", prepare_run)

    def wait_until(self, condition, what: str) -> None:
        """Polled: a token is set on the server's loop, which notifies nobody here."""
        deadline = time.monotonic() + LIVENESS_S
        with self._cond:
            while not condition(self):
                assert time.monotonic() < deadline, what
                self._cond.wait(0.02)

    def all_cancelled(self) -> bool:
        return all(t is not None and t.is_cancelled for t in self.tokens)


def _workflow() -> workflow_pb2.Workflow:
    return json_format.ParseDict({"name": "one-call", "ops": [
        {"id": "q", "input": {}},
        {"id": "p", "format": {"template": "Answer briefly: {q}"}},
        {"id": "a", "llm": {"prompt": "p", "config": {"max_tokens": 2}}},
        {"id": "answer", "output": {"input": "a"}},
    ]}, workflow_pb2.Workflow())


def _request(num_rows: int) -> service_pb2.RunRequest:
    rows = [{"q": f"question number {i} about ledgers"} for i in range(num_rows)]
    return service_pb2.RunRequest(
        workflow=_workflow(), rows=rows_to_proto(rows),
        options=service_pb2.RunOptions(
            optimizations=service_pb2.Optimizations(disable_prompt_cache=True)))


def test_a_run_cancelled_while_planning_stops_planning_at_the_next_prompt(
        tiny_model_dir, monkeypatch):
    from helium_trt.api.events import run_request_inputs

    plan, rows, _ = run_request_inputs(_request(NUM_ROWS))

    async def go():
        engine = make_engine(tiny_model_dir)
        gate = PromptGate(monkeypatch, engine.tokenizer)
        record = PlanningRecord(monkeypatch)
        events = run_workflow(plan, [engine], rows=rows, options=RunOptions(prompt_cache=False))
        try:
            first = asyncio.ensure_future(anext(events))
            await asyncio.to_thread(gate.wait_held, 1)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            assert record.all_cancelled()  # set by the time the cancelled task ended
            gate.release.set()
            await asyncio.to_thread(record.wait_until, lambda r: len(r.outcomes) == 1,
                                    "the cancelled plan never ended")
        finally:
            gate.release.set()
            await events.aclose()
            await engine.close()
        return gate, record

    gate, record = asyncio.run(go())
    assert record.outcomes == ["PlanningCancelled"]
    assert gate.num_prompts == 1  # the held one; the other 63 rows were never tokenized


def test_runs_and_explains_cancelled_while_planning_free_their_threads_over_grpc(
        tiny_model_dir, monkeypatch):
    """Several clients at once: three Runs and one Explain of a big request, all held in
    planning, are cancelled by their clients; every plan stops at the held prompt, and then
    other clients' Run and Explain are answered."""
    with in_process_server(tiny_model_dir) as served:
        gate = PromptGate(monkeypatch, served.engine.tokenizer)
        record = PlanningRecord(monkeypatch)
        channels = [grpc.insecure_channel(served.address) for _ in range(4)]
        try:
            stubs = [service_pb2_grpc.HeliumServiceStub(c) for c in channels]
            big = _request(NUM_ROWS)
            with ThreadPoolExecutor(4) as pool:
                starts = [pool.submit(stub.Run, big, timeout=LIVENESS_S) for stub in stubs[:3]]
                starts.append(pool.submit(stubs[3].Explain.future,
                                          service_pb2.ExplainRequest(request=big),
                                          timeout=LIVENESS_S))
                calls = [s.result(LIVENESS_S) for s in starts]
            gate.wait_held(4)
            for call in calls:
                call.cancel()
            record.wait_until(lambda r: len(r.tokens) == 4 and r.all_cancelled(),
                              "the server never cancelled the held plans")
            gate.release.set()
            record.wait_until(lambda r: len(r.outcomes) == 4, "a cancelled plan never ended")
            assert record.outcomes == ["PlanningCancelled"] * 4
            assert gate.num_prompts == 4  # one held prompt each, of 4 x 64

            small = _request(2)
            with ThreadPoolExecutor(3) as pool:
                runs = [pool.submit(lambda s: list(s.Run(small, timeout=LIVENESS_S)), stub)
                        for stub in stubs[:2]]
                explained = pool.submit(stubs[2].Explain,
                                        service_pb2.ExplainRequest(request=small),
                                        timeout=LIVENESS_S)
                for run in runs:
                    kinds = [e.WhichOneof("event") for e in run.result(LIVENESS_S)]
                    assert kinds.count("row_output") == 2 and "error" not in kinds, kinds
                assert "== schedule" in explained.result(LIVENESS_S).text
            assert stubs[3].Stats(service_pb2.StatsRequest(), timeout=5).queue_depth == 0
        finally:
            gate.release.set()
            for channel in channels:
                channel.close()


def test_server_shutdown_stops_runs_that_are_planning(tiny_model_dir, monkeypatch):
    """Stopping the server cancels its in-flight runs: their planning stops too (held plans are
    released only once the shutdown has cancelled them)."""
    with in_process_server(tiny_model_dir) as served:
        gate = PromptGate(monkeypatch, served.engine.tokenizer)
        record = PlanningRecord(monkeypatch)
        channel = grpc.insecure_channel(served.address)
        stub = service_pb2_grpc.HeliumServiceStub(channel)
        calls = [stub.Run(_request(NUM_ROWS), timeout=LIVENESS_S) for _ in range(2)]
        gate.wait_held(2)

        def release_once_cancelled():
            record.wait_until(lambda r: len(r.tokens) == 2 and r.all_cancelled(),
                              "the shutdown never cancelled the held plans")
            gate.release.set()

        releaser = ThreadPoolExecutor(1)
        released = releaser.submit(release_once_cancelled)
    # the server has stopped (in_process_server's exit): its runs were cancelled meanwhile
    try:
        released.result(LIVENESS_S)
        record.wait_until(lambda r: len(r.outcomes) == 2, "a cancelled plan never ended")
        assert record.outcomes == ["PlanningCancelled"] * 2
        assert gate.num_prompts == 2
        for call in calls:
            with pytest.raises(grpc.RpcError):
                list(call)
    finally:
        gate.release.set()
        releaser.shutdown()
        channel.close()
