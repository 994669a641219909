"""Floor FLOPs per phase (core/flops.py), the parameter count behind them and the measured peak."""
import json
from pathlib import Path

from core.flops import matmul_peak, phase_flops, step_tokens
from core.models import matmul_params


def test_prompt_tokens_count_once_per_group():
    # Two groups: prompt of 5 tokens (3 samples), prompt of 7 tokens (2 samples).
    # P = 5 + 7 = 12; R = 1 + 2 + 3 + 4 + 0 = 10.
    assert step_tokens([5, 5, 5, 7, 7], [1, 2, 3, 4, 0], [0, 0, 0, 1, 1]) == (12, 10)


def test_phase_flops_by_hand():
    # N_body = 100, N_head = 10, P = 12, R = 10 -> 22 positions.
    # forward = 2·(100·22 + 10·10) = 2·2300 = 4600
    # critic  = 2·100·22 = 4400
    # update  = passes · (6·2300 + 6·100·22) = 2 · (13800 + 13200) = 54000
    flops = phase_flops(100, 10, 12, 10, reference=True, critic=True, update_passes=2)
    assert flops == {"generate": 4600.0, "reference": 4600.0, "critic": 4400.0, "update": 54000.0}


def test_phases_that_do_not_run_cost_nothing():
    # GRPO without KL: no reference, no critic; one pass: update = 6·2300 = 13800.
    flops = phase_flops(100, 10, 12, 10, reference=False, critic=False, update_passes=1)
    assert flops == {"generate": 4600.0, "reference": 0.0, "critic": 0.0, "update": 13800.0}


def test_matmul_params_of_the_tiny_llama(tiny_model_path):
    # config: hidden 128, intermediate 256, 2 layers, 2 heads x head_dim 64, tied head.
    # per layer: q, k, v, o 4·128·128 = 65536; gate, up, down 3·128·256 = 98304; 2 norms 256
    # body = 2·(65536 + 98304 + 256) + final norm 128 = 328320; head = vocab · 128.
    vocab = json.loads((Path(tiny_model_path) / "config.json").read_text())["vocab_size"]
    assert matmul_params(tiny_model_path) == (328320, vocab * 128)


def test_matmul_peak_is_a_plausible_rate():
    peak = matmul_peak(size=128, seconds=0.05)
    assert 1e8 < peak < 1e14  # FLOP/s: more than a 1990s CPU, less than any one device today
