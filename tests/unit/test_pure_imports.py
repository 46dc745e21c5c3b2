"""The pure packages import only the standard library, networkx and each other."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "helium_trt"
PURE = ("plan", "optimizer", "cache", "scheduler")
FORBIDDEN = ("torch", "grpc", "google.protobuf", "tritonclient", "helium_trt.api",
             "helium_trt.engine", "helium_trt.runtime", "helium_trt.server")
ALLOWED_THIRD_PARTY = {"networkx"}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def _pure_files():
    return sorted(p for pkg in PURE for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports(path):
    for name in _imports(path):
        assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), \
            f"{path.relative_to(ROOT)} imports {name}"
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY \
            or top == "helium_trt", f"{path.relative_to(ROOT)} imports {name}"
        if top == "helium_trt":
            assert name.split(".")[1] in PURE or name == "helium_trt.errors", \
                f"{path.relative_to(ROOT)} imports {name}"


def test_the_check_sees_the_packages():
    assert len(_pure_files()) > 10
