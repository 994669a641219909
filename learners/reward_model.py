"""Bradley-Terry reward-model training: the loss, pairwise accuracy, and one DeepSpeed rank of the
trainer. No Ray here.

The reward model is the policy's architecture with a scalar score head
(`AutoModelForSequenceClassification`, one label) initialised from a causal-LM checkpoint; it
reads the same text the scorer in `rewards/reward_model.py` reads (`rm_input_text`).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from core.preference_data import PreferencePair
from rewards.reward_model import encode, prepare_tokenizer, rm_input_text, sequence_rewards


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Per-pair negative log-likelihood of the Bradley-Terry model: [P].

        ℓ_p = −log σ(r_c,p − r_r,p) = softplus(r_r,p − r_c,p)

    chosen_rewards, rejected_rewards: [P] scalar rewards r(x_p, y_c) and r(x_p, y_r).
    Bradley & Terry (1952); as a reward-model loss: Ouyang et al. 2022 (InstructGPT), eq. 1, with
    one pair per prompt instead of all K-choose-2 pairs of a ranking.
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def pairwise_correct(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """1 where the chosen response scores higher, 0.5 on a tie, 0 otherwise: [P].
    Its mean is the pairwise accuracy (0.5 is chance)."""
    return (chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards).float()


def build_reward_model(path: str, dtype: str = "float32"):
    """(model, tokenizer): the checkpoint's architecture with a fresh one-label score head (or its
    trained head, for a reward-model checkpoint). The pad id is set so pooling finds the last token."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=getattr(torch, dtype))
    prepare_tokenizer(tokenizer, model.config)
    model.config.use_cache = False
    return model, tokenizer


def pair_texts(tokenizer, pairs: list[PreferencePair]) -> list[str]:
    """[chosen_0 .. chosen_{P-1}, rejected_0 .. rejected_{P-1}] as reward-model inputs."""
    return ([rm_input_text(tokenizer, p.prompt, p.chosen) for p in pairs]
            + [rm_input_text(tokenizer, p.prompt, p.rejected) for p in pairs])


class RewardModelTrainer:
    """A DeepSpeed-wrapped reward model on one data-parallel rank."""

    def __init__(self, model, tokenizer, config: dict, world_size: int, max_length: int):
        import deepspeed

        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
        self.tokenizer = tokenizer
        self.world_size = world_size
        self.max_length = max_length
        self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def _rewards(self, model, pairs: list[PreferencePair]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = encode(self.tokenizer, pair_texts(self.tokenizer, pairs), self.max_length).to(self.device)
        r = sequence_rewards(model, enc["input_ids"], enc["attention_mask"]).float()
        return r[:len(pairs)], r[len(pairs):]

    def train_step(self, pairs: list[PreferencePair], global_pairs: int) -> dict[str, float]:
        """One optimiser step on this rank's share of a batch of `global_pairs` pairs.

        The rank's loss is Σ_its pairs ℓ_p / global_pairs · world_size: DeepSpeed averages
        gradients over ranks, so their sum is the gradient of the batch mean.
        """
        self.engine.train()
        chosen, rejected = self._rewards(self.engine, pairs)
        losses = bradley_terry_loss(chosen, rejected)
        self.engine.backward(losses.sum() / global_pairs * self.world_size)
        self.engine.step()
        return {"loss_sum": float(losses.detach().sum()),
                "correct": float(pairwise_correct(chosen.detach(), rejected.detach()).sum())}

    @torch.no_grad()
    def evaluate(self, pairs: list[PreferencePair]) -> dict[str, torch.Tensor]:
        """Per-pair BT loss, correctness and margin r_c − r_r, each [P], for one micro-batch."""
        self.engine.eval()
        chosen, rejected = self._rewards(self.engine.module, pairs)
        return {"loss": bradley_terry_loss(chosen, rejected), "correct": pairwise_correct(chosen, rejected),
                "margin": chosen - rejected}

    def save(self, out_dir: str, rank: int) -> str | None:
        """An HF checkpoint with its tokenizer, loadable by `RewardModelScore` (every rank calls:
        ZeRO-3 gathers the weights collectively)."""
        import deepspeed

        module = self.engine.module
        params = list(module.parameters())
        zero3 = self.engine.zero_optimization_stage() == 3
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=zero3):
            state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        if rank != 0:
            return None
        module.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
        self.tokenizer.save_pretrained(out_dir)
        return os.path.abspath(out_dir)
