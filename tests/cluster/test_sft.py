"""`rewardflow sft` through the real CLI in a subprocess: Ray + DeepSpeed (2 data-parallel ranks,
ZeRO-2, 2 micro-batches per rank) on the tiny model, 2 steps on a repeated tiny dataset; the saved
checkpoint loads with `load_policy` and in vLLM. (That prompt tokens get no gradient is shown by
tests/unit/learners/test_sft.py.)"""
import json
import os
import subprocess
import sys

import pytest
import torch

from core.models import load_policy, load_tokenizer

pytestmark = pytest.mark.cluster

CONVERSATIONS = [
    {"prompt": "What is 3 + 4? Answer with just the number.", "response": "7"},
    {"prompt": "What is 2 * 3?", "response": "2 * 3 = 6. The answer is 6."},
    {"messages": [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "2"},
                  {"role": "user", "content": "And 2 + 2?"}, {"role": "assistant", "content": "4"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 9 - 5?"},
                  {"role": "assistant", "content": "4"}]},
]

VLLM_GENERATE = """
import sys
from core.models import configure_vllm_env
configure_vllm_env(1)
from vllm import LLM, SamplingParams
llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=128, seed=0, enforce_eager=True)
out = llm.generate(["What is 3 + 4?"], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
print("generated", len(out[0].outputs[0].token_ids))
"""


def test_sft_lowers_the_loss_and_saves_a_loadable_policy(tiny_model_path, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in CONVERSATIONS * 2))
    out = tmp_path / "sft"
    cmd = [sys.executable, "-m", "apps.cli", "sft", "recipes/sft_arith.yaml", f"model.path={tiny_model_path}",
           f"output_dir={out}", f"data.sources=[{{kind: file, path: {data}}}]", "data.eval_fraction=0.25",
           "steps=2", "batch_size=6", "lr=1e-3", "max_len=128", "learner.num_workers=2", "learner.num_cpus=0.5",
           "learner.zero_stage=2", "learner.micro_batch_size=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out loss" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    # 8 lines: 2 held out, 6 trained on, all 6 in each step (the same examples twice)
    assert (summary["train_examples"], summary["eval_examples"], summary["steps"]) == (6, 2, 2)
    assert summary["sources"] == {"chat": {"train": 6, "eval": 2, "overlong": 0}}
    first, second = summary["train_loss"]
    assert second < first, summary["train_loss"]
    # held-out lines repeat trained ones: their loss falls too
    assert summary["eval_loss_after"] < summary["eval_loss_before"]

    trained, start = load_policy(summary["checkpoint"]), load_policy(tiny_model_path)
    changed = [name for name, p in start.state_dict().items()
               if not torch.equal(p, trained.state_dict()[name])]
    assert "model.embed_tokens.weight" in changed and "model.layers.1.mlp.down_proj.weight" in changed
    assert len(load_tokenizer(summary["checkpoint"])) == len(load_tokenizer(tiny_model_path))

    gen = subprocess.run([sys.executable, "-c", VLLM_GENERATE, summary["checkpoint"]], capture_output=True,
                         text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert "generated 4" in gen.stdout
