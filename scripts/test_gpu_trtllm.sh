#!/usr/bin/env bash
# Run helium's Triton integration tests against the real TensorRT-LLM model on this GPU node.
#
# Needs (see docs/triton.md):
#   HELIUM_TRTLLM_ENGINE_DIR  engine directory built by trtllm-build (config.json + rank*.engine)
#   HELIUM_TEST_MODEL_DIR     the Hugging Face directory the engine was built from (tokenizer,
#                             and the weights of the in-process reference engine)
#   HELIUM_TRITONSERVER_HOME  Triton install with the tensorrtllm backend (default /opt/tritonserver,
#                             as in the tritonserver:<ver>-trtllm-python-py3 container)
# Optional:
#   HELIUM_KV_CACHE_FRACTION  kv_cache_free_gpu_mem_fraction (default 0.5: leave room for others)
#
# Without a GPU or without those inputs it prints "SKIPPED: <reason>" and exits 0, so CI on CPU
# machines can call it unconditionally; pass --strict to exit 3 instead.
set -euo pipefail

strict=0
[[ "${1:-}" == "--strict" ]] && strict=1

skip() {
  echo "SKIPPED: $*"
  exit $(( strict ? 3 : 0 ))
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
triton_home="${HELIUM_TRITONSERVER_HOME:-/opt/tritonserver}"

command -v nvidia-smi >/dev/null 2>&1 || skip "no NVIDIA driver here (nvidia-smi not found)"
nvidia-smi -L 2>/dev/null | grep -q "^GPU " || skip "nvidia-smi lists no GPU"
[[ -x "$triton_home/bin/tritonserver" ]] || skip "no tritonserver at $triton_home (set HELIUM_TRITONSERVER_HOME)"
[[ -d "$triton_home/backends/tensorrtllm" ]] || skip "$triton_home has no tensorrtllm backend"
[[ -n "${HELIUM_TRTLLM_ENGINE_DIR:-}" && -f "${HELIUM_TRTLLM_ENGINE_DIR}/config.json" ]] \
  || skip "HELIUM_TRTLLM_ENGINE_DIR does not point at a trtllm-build engine directory"
[[ -n "${HELIUM_TEST_MODEL_DIR:-}" && -f "${HELIUM_TEST_MODEL_DIR}/tokenizer.json" ]] \
  || skip "HELIUM_TEST_MODEL_DIR does not point at the model's Hugging Face directory"

# The engine's KV block size, so helium counts reused blocks in the right unit.
tokens_per_block="$(python3 - "$HELIUM_TRTLLM_ENGINE_DIR/config.json" <<'EOF'
import json, sys
build = json.load(open(sys.argv[1])).get("build_config", {})
for section in (build.get("plugin_config", {}), build.get("kv_cache_config", {}), build):
    if section.get("tokens_per_block"):
        print(section["tokens_per_block"])
        break
else:
    print(32)
EOF
)"

# The GPU repository: model_repo/ with its tensorrt_llm stand-in swapped for deploy/gpu/tensorrt_llm.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$repo_root/model_repo" "$work/repo"
rm -rf "$work/repo/tensorrt_llm"
cp -r "$repo_root/deploy/gpu/tensorrt_llm" "$work/repo/tensorrt_llm"
config="$work/repo/tensorrt_llm/config.pbtxt"
set_param() {  # set_param KEY VALUE: rewrite one string parameter in place
  python3 - "$config" "$1" "$2" <<'EOF'
import re, sys
path, key, value = sys.argv[1:]
text = open(path).read()
pattern = r'(key: "%s", value: \{ string_value: ")[^"]*(")' % re.escape(key)
text, count = re.subn(pattern, lambda m: m.group(1) + value + m.group(2), text)
assert count == 1, f"parameter {key} not found in {path}"
open(path, "w").write(text)
EOF
}
set_param gpt_model_path "$HELIUM_TRTLLM_ENGINE_DIR"
set_param tokens_per_block "$tokens_per_block"
set_param kv_cache_free_gpu_mem_fraction "${HELIUM_KV_CACHE_FRACTION:-0.5}"

echo "tensorrt_llm engine: $HELIUM_TRTLLM_ENGINE_DIR (tokens_per_block $tokens_per_block)"
cd "$repo_root"
HELIUM_TRITONSERVER_HOME="$triton_home" HELIUM_TEST_TRITON_REPO="$work/repo" \
  python3 -m pytest -v tests/integration/test_triton_engine.py tests/integration/test_triton_contract.py tests/integration/test_triton_metrics.py "${@:1+strict}"
