"""Builders and constants shared by several test modules (fixtures live in the conftest.py files)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from core.protocol import Rollouts, RolloutTensors, Scores

# ---------------------------------------------------------------- data contracts


def make_rollouts(group_ids, *, prompt_ids=None, response_ids=None, rollout_logprobs=None, response_texts=None,
                  finish_reasons=None, policy_versions=None, prompt_texts=None, answers=None,
                  greedy=None) -> Rollouts:
    """Rollouts with one row per entry of `group_ids`; every column not given is empty / neutral."""
    n = len(group_ids)
    empty = [np.zeros(0)] * n
    return Rollouts(
        prompt_ids=empty if prompt_ids is None else prompt_ids,
        response_ids=empty if response_ids is None else response_ids,
        rollout_logprobs=empty if rollout_logprobs is None else rollout_logprobs,
        response_texts=[""] * n if response_texts is None else response_texts,
        finish_reasons=["stop"] * n if finish_reasons is None else finish_reasons,
        group_ids=np.asarray(group_ids),
        policy_versions=np.zeros(n, int) if policy_versions is None else np.asarray(policy_versions),
        prompt_texts=[""] * n if prompt_texts is None else prompt_texts,
        answers=[""] * n if answers is None else answers,
        greedy=None if greedy is None else np.asarray(greedy, dtype=bool),
    )


def make_tensors(mask, **extra) -> RolloutTensors:
    """RolloutTensors for a response mask [B, T]: a one-token prompt, `input_ids` numbered 0.. row
    by row (so `input_ids[:, 0]` names the row), zero rollout logprobs unless given in `extra`."""
    m = torch.as_tensor(mask, dtype=torch.float32)
    b, t = m.shape
    extra.setdefault("rollout_logprobs", torch.zeros(b, t))
    return RolloutTensors(input_ids=torch.arange(b * (t + 1)).reshape(b, t + 1),
                          attention_mask=torch.ones(b, t + 1, dtype=torch.long), response_mask=m, **extra)


def make_scores(values, **extra) -> Scores:
    """Scores with these combined values, no terms and no errors."""
    values = np.asarray(values, dtype=float)
    return Scores(values=values, terms={}, errors=[None] * len(values), **extra)


# ---------------------------------------------------------------- tiny models (no download)


def offline_tokenizer(root: Path) -> Path:
    """The in-process byte-level BPE tokenizer (ChatML template) of `core.models.build_tiny_tokenizer`
    under `root` (built once; milliseconds). No network, no model files."""
    from core.models import build_tiny_tokenizer

    return build_tiny_tokenizer(root / "tiny-tokenizer")


def offline_tiny_model(root: Path, seed: int = 0) -> Path:
    """A tiny random Llama with `offline_tokenizer(root)` under `root` (built once; seconds)."""
    from core.models import build_tiny_model

    return build_tiny_model(root / f"tiny-llama-seed{seed}", seed=seed, tokenizer=offline_tokenizer(root))


# ---------------------------------------------------------------- judge and reward-server tests

# An OpenAI-compatible endpoint on the discard port: nothing answers there.
JUDGE_ENDPOINT = {"kind": "endpoint", "base_url": "http://127.0.0.1:9/v1", "model": "judge", "api_key_env": None}

SERVER_TOKEN = "s3cret-token"
SERVER_AUTH = {"Authorization": f"Bearer {SERVER_TOKEN}"}
RIGHT = {"prompt": "What is 40 + 2?", "response": "40 + 2 = 42", "answer": "42"}
WRONG = {"prompt": "What is 40 + 2?", "response": "41", "answer": "42"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_reward_server(port: int, log: Path, *settings: str) -> subprocess.Popen:
    """`rewardflow serve-reward math_correct` on 127.0.0.1:`port` with token `SERVER_TOKEN`."""
    from rewards.remote import TOKEN_ENV

    exe = Path(sys.executable).parent / "rewardflow"
    cmd = [str(exe), "serve-reward", "math_correct", "--port", str(port), *settings]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, TOKEN_ENV: SERVER_TOKEN})


def wait_healthy(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise TimeoutError(log.read_text())


def stop_reward_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=20)
