"""The `perf/<phase>_tflops` and `perf/<phase>_peak_frac` metrics the controller logs each step
(cluster/metrics.StepFlops), from the floor FLOPs of core/flops.py."""
from types import SimpleNamespace

import numpy as np
import pytest

from cluster.metrics import StepFlops


def _step_flops(generate_timed=True):
    # N_body = 100, N_head = 10, peak 1000 FLOP/s, GRPO with KL (reference), one pass.
    return StepFlops(100, 10, 1000.0, reference=True, critic=False, update_passes=1,
                     workers={"generate": 1, "reference": 1, "critic": 1, "update": 2},
                     generate_timed=generate_timed)


def _rollouts():
    # Two groups: prompts of 5 and 7 tokens -> P = 12; R = 1 + 2 + 3 + 4 + 0 = 10 (22 positions).
    lens = [(5, 1), (5, 2), (5, 3), (7, 4), (7, 0)]
    return SimpleNamespace(prompt_ids=[np.zeros(p) for p, _ in lens], response_ids=[np.zeros(r) for _, r in lens],
                           group_ids=np.array([0, 0, 0, 1, 1]))


def test_step_metrics_by_hand():
    # forward = 2·(100·22 + 10·10) = 4600 FLOPs; update = 6·(100·22 + 10·10) = 13800.
    times = {"timing/generate": 9.2, "timing/reference": 2.3, "timing/critic": 0.0, "timing/update": 3.45}
    out = _step_flops().metrics(_rollouts(), times)
    # generate: 4600 FLOPs in 9.2 s at 1000 FLOP/s -> 4600 / 9200 = 0.5
    # reference: 4600 / (2.3 · 1000) = 2.0 (a toy peak)
    # update: 13800 / (3.45 s · 2 workers · 1000) = 2.0; no critic phase
    assert out == pytest.approx({"perf/peak_tflops": 1e-9, "perf/generate_tflops": 4.6e-9,
                                 "perf/generate_peak_frac": 0.5, "perf/reference_tflops": 4.6e-9,
                                 "perf/reference_peak_frac": 2.0, "perf/update_tflops": 1.38e-8,
                                 "perf/update_peak_frac": 2.0})


def test_the_asynchronous_loop_logs_no_generate_fraction():
    # There `timing/generate` is the wait for rollouts made during the last update.
    out = _step_flops(generate_timed=False).metrics(_rollouts(), {"timing/generate": 0.01, "timing/update": 1.0})
    assert "perf/generate_peak_frac" not in out and out["perf/generate_tflops"] == pytest.approx(4.6e-9)
