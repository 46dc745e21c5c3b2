"""Shared by the TLS, tenant and metrics tests: tokens files, bearer metadata, small requests."""

from __future__ import annotations

from pathlib import Path

import yaml
from google.protobuf import json_format

from helium_trt.api.convert import rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, workflow_pb2

TOKEN_A = "token-of-tenant-a-0123456789"
TOKEN_B = "token-of-tenant-b-9876543210"


def write_tokens(path: Path, tenants: dict[str, dict]) -> Path:
    """``tenants``: name -> {"tokens": [...], limits...} (server.tenants' file format)."""
    path.write_text(yaml.safe_dump({"tenants": tenants}))
    return path


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def one_call_request(system: str, question: str, max_tokens: int = 2, name: str = "ask",
                     **options) -> service_pb2.RunRequest:
    """One LLM call: a chat prompt of a static system part and the row's question."""
    ops = [{"id": "q", "input": {}},
           {"id": "p", "format": {"messages": [{"role": "ROLE_SYSTEM", "template": system},
                                               {"role": "ROLE_USER", "template": "{q}"}]}},
           {"id": "a", "llm": {"prompt": "p", "config": {"max_tokens": max_tokens}}},
           {"id": "out", "output": {"input": "a"}}]
    workflow = json_format.ParseDict({"name": name, "ops": ops}, workflow_pb2.Workflow())
    return service_pb2.RunRequest(workflow=workflow, rows=rows_to_proto([{"q": question}]),
                                  options=service_pb2.RunOptions(**options))


def finished(events, op_id: str = "a") -> service_pb2.OpFinished:
    found = [e.op_finished for e in events
             if e.WhichOneof("event") == "op_finished" and e.op_finished.op_id == op_id]
    assert len(found) == 1, events
    return found[0]
