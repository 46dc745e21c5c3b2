"""examples/clients/node: the Node.js client (@grpc/grpc-js + @grpc/proto-loader) against a real
`helium-trt serve` on 127.0.0.1, installed with `npm ci` from its package-lock.json in a temp
copy. Skipped where node or npm is not installed, or the npm registry cannot be reached."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from google.protobuf import json_format
from runtime_helpers import outputs_in_process
from serve_helpers import serve

from helium_trt.api.helium.v1 import service_pb2

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "clients" / "node"
OFFLINE = re.compile(r"ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNREFUSED|ECONNRESET|network")

REQUEST = {
    "workflow": {"name": "node_json", "ops": [
        {"id": "topic", "input": {}},
        {"id": "facts", "input": {}},
        {"id": "p", "format": {"template": "Topic: {topic}\nFact: {facts}\nSummary:"}},
        {"id": "s", "llm": {"prompt": "p", "config": {"maxTokens": 4, "temperature": 0}}},
        {"id": "summary", "output": {"input": "s"}},
    ]},
    "rows": [{"topic": "tea", "facts": ["green", "black"]}, {"topic": "rivers", "facts": ["Nile"]}],
}


@pytest.fixture(scope="module")
def node_client(tmp_path_factory) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    copy = tmp_path_factory.mktemp("node_client")
    for name in ("package.json", "package-lock.json", "client.js"):
        shutil.copy(EXAMPLE / name, copy / name)
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=copy,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and OFFLINE.search(done.stderr):
        pytest.skip(f"npm registry unreachable: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr
    return copy


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    with serve(tiny_model_dir, tmp_path_factory.mktemp("serve")) as served:
        yield served


def node(client: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HELIUM_PROTO_DIR": str(ROOT / "protos")}
    return subprocess.run(["node", *args], cwd=client, capture_output=True, text=True,
                          timeout=120, env=env)


def _rows(stdout: str) -> dict[int, dict[str, str]]:
    rows: dict[int, dict[str, str]] = {}
    current = None
    for line in stdout.splitlines():
        if m := re.fullmatch(r"row (\d+):", line):
            current = rows.setdefault(int(m.group(1)), {})
        elif line == "stats:":
            current = None
        elif current is not None and line.startswith("  "):
            name, _, text = line[2:].partition(": ")
            current[name] = text
    return rows


def test_the_default_workflow_runs(node_client, server):
    done = node(node_client, "client.js", server.address)
    assert done.returncode == 0, done.stderr
    assert set(_rows(done.stdout)) == {0, 1}
    assert "  numLlmCalls: 2" in done.stdout and "  numRowsFailed: 0" in done.stdout


def test_a_json_request_gives_the_python_clients_outputs(node_client, server, tiny_model_dir,
                                                          tmp_path):
    path = tmp_path / "request.json"
    path.write_text(json.dumps(REQUEST))
    done = node(node_client, "client.js", server.address, str(path))
    assert done.returncode == 0, done.stderr
    expected = outputs_in_process(tiny_model_dir,
                                  json_format.ParseDict(REQUEST, service_pb2.RunRequest()))
    assert _rows(done.stdout) == expected  # list columns arrive as lists: one call per element


def test_plain_object_rows_arrive_empty_unless_wrapped(node_client, server):
    script = (
        "const c = require('./client.js');"
        "console.log(JSON.stringify(c.toStruct({q: 'hi', l: ['a', 1, true, null, {k: 'v'}]})));"
        "const grpc = require('@grpc/grpc-js'), pl = require('@grpc/proto-loader');"
        "const d = pl.loadSync('helium/v1/service.proto', {includeDirs: [process.env.HELIUM_PROTO_DIR]});"
        "const S = grpc.loadPackageDefinition(d).helium.v1.HeliumService;"
        f"const client = new S('{server.address}', grpc.credentials.createInsecure());"
        "const call = client.Run({workflow: {ops: [{id: 'q', input: {}}, "
        "{id: 'o', output: {input: 'q'}}]}, rows: [{q: 'plain'}]});"
        "call.on('data', () => {});"
        "call.on('error', (e) => { console.log(e.code + ' ' + e.details); client.close(); });"
    )
    done = node(node_client, "-e", script)
    assert done.returncode == 0, done.stderr
    wrapped, refused = done.stdout.splitlines()
    assert json.loads(wrapped) == {"fields": {
        "q": {"stringValue": "hi"},
        "l": {"listValue": {"values": [
            {"stringValue": "a"}, {"numberValue": 1}, {"boolValue": True},
            {"nullValue": "NULL_VALUE"},
            {"structValue": {"fields": {"k": {"stringValue": "v"}}}}]}}}}
    assert refused == "3 operator 'q', field 'rows[0].q': row 0 has no column 'q'"
