"""The committed generated protobuf code matches what scripts/gen_protos.py produces now, and it is
gencode old enough for the oldest protobuf runtime pyproject.toml admits."""

import importlib.metadata
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "helium_trt" / "api"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pinned(extra: str, name: str) -> str:
    """The ``name==X`` version pinned in one of pyproject's extras."""
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        match = re.fullmatch(rf"{re.escape(name)}==([\w.]+)", requirement.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"extra {extra!r} pins no {name}")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_test_extra_installs_the_pinned_generator():
    # CI installs `.[test]`; with the generator there, the byte comparison below never skips in CI.
    assert _pinned("test", "grpcio-tools") == _pinned("protos", "grpcio-tools")


def test_generated_code_is_up_to_date(tmp_path):
    pinned = _pinned("protos", "grpcio-tools")
    try:
        installed = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != pinned:
        pytest.skip(f"grpcio-tools {installed} is installed; the committed code comes from {pinned} "
                    "(pip install -e '.[protos]')")
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


def test_gencode_runs_on_the_oldest_admitted_protobuf():
    # A protobuf runtime refuses gencode newer than itself, so the gencode's version must not pass
    # the lower bound of the protobuf dependency (protobuf 5.26.1, as tritonclient 2.52-2.66 need).
    floor = next(re.search(r">=([\d.]+)", r).group(1) for r in PYPROJECT["project"]["dependencies"]
                 if re.match(r"protobuf\b", r))
    for path in sorted((COMMITTED / "helium").rglob("*_pb2.py")):
        gencode = re.search(r"^# Protobuf Python Version: ([\d.]+)$", path.read_text(), re.MULTILINE)
        assert gencode, f"{path.name} names no protobuf gencode version"
        assert _version_tuple(gencode.group(1)) <= _version_tuple(floor), \
            f"{path.name} is protobuf {gencode.group(1)} gencode, newer than the protobuf>={floor} floor"
