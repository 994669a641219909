"""RunLogger's files and wandb run, and the wandb run id's way through a checkpoint: a resumed run
continues the wandb run of the run it resumes."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from cluster.checkpoint import STATE_KEYS, begin, commit, resolve_resume, wandb_run_id
from cluster.controller import Controller, Roles
from cluster.metrics import RunLogger
from cluster.placement import process_usage
from cluster.recipe import ConfigError, load_recipe
from core.protocol import Prompts
from learners.algos.registry import build_algorithm


class FakeRewards:
    def state(self):
        return {"running": [1.0, 2.0]}


def _cfg(tmp_path, *overrides):
    return load_recipe("recipes/grpo_arith.yaml", [f"train.output_dir={tmp_path}", "logging.wandb_mode=disabled",
                                                   "logging.progress_bar=false", *overrides])


def _logger(cfg, tmp_path, run_id=None):
    return RunLogger(cfg.logging, {"algo": "grpo"}, str(tmp_path), cfg.train.steps, run_id)


def _controller(cfg, logger):
    prompts = Prompts(ids=["p0"], texts=["p0"], token_ids=[np.array([5])], answers=["0"])
    roles = Roles(rollouts=None, rewards=FakeRewards(), learners=None, reference=None, sync=None)
    return Controller(cfg, roles, build_algorithm(cfg.algo), prompts, prompts, 0, logger)


def test_the_wandb_run_id_goes_through_the_checkpoint_and_back(tmp_path):
    cfg = _cfg(tmp_path)
    first = _logger(cfg, tmp_path)
    state = _controller(cfg, first).state(2, wall_s=1.0)
    first.close()
    assert state["wandb_run_id"] == first.run_id and json.loads(json.dumps(state)) == state  # plain JSON

    tmp = begin(tmp_path / "checkpoints", 2)
    commit(tmp, state, cfg)  # state.json is written before the manifest is signed
    resume = resolve_resume(_cfg(tmp_path, "train.resume=latest"))
    assert wandb_run_id(resume) == first.run_id
    resumed = _logger(cfg, tmp_path, wandb_run_id(resume))
    assert resumed.run_id == first.run_id
    resumed.close()


def test_a_checkpoint_without_a_wandb_run_id_starts_a_new_run(tmp_path):
    assert wandb_run_id(None) is None
    assert wandb_run_id((tmp_path / "step_2", {"step": 2})) is None  # written before the id was kept


def test_a_malformed_wandb_run_id_is_a_one_line_error(tmp_path):
    cfg = _cfg(tmp_path)
    state = {**dict.fromkeys(STATE_KEYS), "step": 2, "wandb_run_id": ["not", "an", "id"]}
    commit(begin(tmp_path / "checkpoints", 2), state, cfg)
    with pytest.raises(ConfigError, match=r"^train.resume: .*/step_2/state.json has a malformed wandb_run_id$"):
        resolve_resume(_cfg(tmp_path, "train.resume=latest"))


class FakeRollouts(SimpleNamespace):
    def __len__(self):
        return len(self.prompt_texts)


def test_the_logger_appends_samples_and_merges_its_sources(tmp_path):
    cfg = _cfg(tmp_path, "logging.table_rows=2")
    logger = _logger(cfg, tmp_path)
    logger.add_source(lambda: {"resources/learner_cpu_percent": 42.0})
    logger.describe({"ray_job_id": "01000000", "placement": {"learner": ["node"]}})
    rollouts = FakeRollouts(prompt_texts=["<p>", "q", "r"], response_texts=["a", "b", "c"], answers=["1", "2", "3"])
    scores = SimpleNamespace(values=np.array([1.0, 0.0, 0.0]), errors=[None, "boom", None])
    for step in (0, 4):
        logger.samples_table(step, rollouts, scores)
        logger.log(step + 1, {"reward/total": 0.5})
    logger.close()

    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert rows[0] == {"step": 0, "prompt": "<p>", "response": "a", "answer": "1", "reward": 1.0, "error": ""}
    assert [(r["step"], r["error"]) for r in rows] == [(0, ""), (0, "boom"), (4, ""), (4, "boom")]  # table_rows=2
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["resources/learner_cpu_percent"], r["reward/total"]) for r in logged] == [
        (1, 42.0, 0.5), (5, 42.0, 0.5)]


def test_process_usage_reads_this_process():
    process_usage()
    sum(i * i for i in range(2_000_000))  # some CPU between two readings
    cpu, rss = process_usage()
    assert cpu > 0 and rss > 10 * 2**20
