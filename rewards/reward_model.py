"""Reward models: a scalar score r(x, y) from a sequence-classification checkpoint, and the
Bradley-Terry preference derived from it.

Any Hugging Face `AutoModelForSequenceClassification` checkpoint with one label serves (e.g. the
output of `rewardflow train-rm`). The model reads the prompt rendered by the tokenizer's chat
template with the generation prompt, followed by the response text: exactly what the policy
saw and wrote, and what `learners/reward_model.py` trains on (`rm_input_text`). Its value is the
score head at the last non-pad token.

torch and transformers are imported on first use: the registry (and so the recipe config)
imports this module without loading a model.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from rewards.base import (Basis, Expression, Format, Granularity, PairwiseReward, Reward, RewardConfig, Sample,
                          Taxonomy)


class RewardModelConfig(RewardConfig):
    path: str  # a local Hugging Face directory with a one-label sequence-classification head
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(512, ge=8)  # longer inputs keep their end (the response)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        """Resolved where the recipe is validated: reward actors may start in another directory."""
        return str(Path(path).expanduser().absolute())


def generation_suffix(tokenizer) -> str:
    """What the chat template appends for `add_generation_prompt` (e.g. "<|im_start|>assistant\\n")."""
    user = [{"role": "user", "content": "x"}]
    with_prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=False)
    return with_prompt[len(without):]


def rm_input_text(tokenizer, prompt: str, response: str, suffix: str | None = None) -> str:
    """The reward model's input: the chat-rendered prompt, then the response.

    A prompt that already ends with the template's generation prompt (rollouts carry rendered
    prompts) is used as is; a plain user message (preference files) is rendered first. A
    tokenizer without a chat template gets prompt + "\\n" + response.
    """
    if not tokenizer.chat_template:
        return f"{prompt}\n{response}"
    suffix = generation_suffix(tokenizer) if suffix is None else suffix
    if not (suffix and prompt.endswith(suffix)):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True)
    return prompt + response


def prepare_tokenizer(tokenizer, model_config=None):
    """pad = eos when the tokenizer has none; keep the end of over-long inputs; tell the model
    which id is padding (its last-token pooling skips it)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.truncation_side = "left"
    if model_config is not None:
        model_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def encode(tokenizer, texts: list[str], max_length: int):
    """Token ids and attention mask [B, T], padded on the tokenizer's padding side."""
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, add_special_tokens=False,
                     return_tensors="pt")


def sequence_rewards(model, input_ids, attention_mask):
    """r(x, y) [B] for token ids [B, T] and their attention mask [B, T].

    In a left-padded batch positions count real tokens only, so each row gets the positions (and
    the score) of its unpadded sequence (RoPE models are shift-invariant anyway; absolute
    position embeddings are not); right-padded rows already have them (and encoders such as
    RoBERTa offset their own). The model pools its score head at the last non-pad token.
    """
    from core.ops import position_ids

    kwargs = {}
    if bool((attention_mask[:, 0] == 0).any()):
        kwargs["position_ids"] = position_ids(attention_mask.long())
    return model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits[:, 0]


def load_reward_model(path: str, dtype: str = "float32"):
    """(model in eval mode, tokenizer) from a local directory with a one-label classification head."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"reward model {path} is not a local Hugging Face model directory (no config.json)")
    config = AutoConfig.from_pretrained(path)
    # A causal-LM checkpoint would get a freshly initialised head: random rewards.
    if not any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        raise ValueError(f"reward model {path} has no sequence-classification head (architectures "
                         f"{config.architectures}); train one with `rewardflow train-rm`")
    if config.num_labels != 1:
        raise ValueError(f"reward model {path} has {config.num_labels} labels; a scalar reward model has 1")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, config=config, dtype=getattr(torch, dtype))
    prepare_tokenizer(tokenizer, model.config)
    model.config.use_cache = False
    return model.eval(), tokenizer


class _LazyModel:
    """Loads the checkpoint on first use, once, even when the reward actor's worker threads race
    (a call that timed out may still be loading when the next one starts)."""

    def __init__(self, cfg: RewardModelConfig):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._loaded = None

    def get(self):
        with self._lock:
            if self._loaded is None:
                model, tokenizer = load_reward_model(self.cfg.path, self.cfg.dtype)
                self._loaded = model, tokenizer, generation_suffix(tokenizer) if tokenizer.chat_template else ""
            return self._loaded

    def score_batch(self, samples: list[Sample]) -> list[float]:
        import torch

        model, tokenizer, suffix = self.get()
        texts = [rm_input_text(tokenizer, s.prompt, s.response, suffix) for s in samples]
        out: list[float] = []
        with torch.inference_mode():
            for lo in range(0, len(texts), self.cfg.batch_size):
                enc = encode(tokenizer, texts[lo:lo + self.cfg.batch_size], self.cfg.max_length)
                out.extend(sequence_rewards(model, enc["input_ids"], enc["attention_mask"]).float().tolist())
        return out


class _ModelBacked:
    """What both reward-model rewards share: config, lazy checkpoint, a tiny registry example."""

    Config = RewardModelConfig
    heavy_example = True

    def __init__(self, cfg: RewardModelConfig):
        super().__init__(cfg)
        self.model = _LazyModel(cfg)

    @classmethod
    def example_config(cls) -> RewardModelConfig:
        """A tiny random reward model built locally (for the registry's contract test)."""
        from core.models import build_tiny_reward_model, cache_dir

        return RewardModelConfig(path=str(build_tiny_reward_model(cache_dir() / "tiny-reward-model-test")))


class RewardModelScore(_ModelBacked, Reward):
    taxonomy = Taxonomy(Basis.MODEL, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "scalar reward model r(x, y): a one-label sequence-classification checkpoint (rewardflow train-rm)"

    def score_batch(self, samples: list[Sample]) -> list[float]:
        return self.model.score_batch(samples)

    def score(self, sample: Sample) -> float:
        return self.model.score_batch([sample])[0]


class RewardModelPreference(_ModelBacked, PairwiseReward):
    taxonomy = Taxonomy(Basis.MODEL, Format.PAIRWISE, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "Bradley-Terry preference σ(r(x, y) − r(x, y′)) from a scalar reward model"

    def prefer(self, a: Sample, b: Sample) -> float:
        r_a, r_b = self.model.score_batch([a, b])
        return bradley_terry_probability(r_a, r_b)


def bradley_terry_probability(r_a: float, r_b: float) -> float:
    """P(a ≻ b) = σ(r_a − r_b) (Bradley & Terry 1952; the reward model's preference), computed
    without overflow for large gaps."""
    d = r_a - r_b
    return 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))
