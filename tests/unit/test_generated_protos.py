"""The committed generated protobuf code matches what scripts/gen_protos.py produces now."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "helium_trt" / "api"


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_up_to_date(tmp_path):
    written = _gen_module().generate(tmp_path)
    assert written, "protoc produced nothing"
    for path in written:
        rel = path.relative_to(tmp_path)
        committed = COMMITTED / rel
        assert committed.exists(), f"{rel} is not committed; run scripts/gen_protos.py"
        assert committed.read_text() == path.read_text(), \
            f"{rel} is stale; run python scripts/gen_protos.py"
    fresh = {p.relative_to(tmp_path) for p in written}
    stale = {p.relative_to(COMMITTED) for p in (COMMITTED / "helium").rglob("*_pb2*.py*")
             if p.suffix in (".py", ".pyi")}  # not the interpreter's __pycache__/*.pyc
    assert stale == fresh, f"generated files without a .proto: {sorted(stale - fresh)}"
