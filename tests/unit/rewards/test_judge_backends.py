"""Judge backends (rewards/judge_backends.py): picked by `kind` from the recipe's args, the endpoint's
API key, and an endpoint that does not answer."""
import pytest

from cluster.recipe import RewardTermConfig
from rewards.base import Sample
from rewards.isolation import IsolatedRunner, score_terms
from rewards.judge import JudgePairwise, JudgeScore, JudgeScoreConfig
from rewards.judge_backends import EndpointBackend, EndpointJudgeConfig, LocalJudgeConfig, build_backend
from rewards.registry import REWARDS
from tests.helpers import JUDGE_ENDPOINT as ENDPOINT


def test_recipe_args_pick_the_backend_by_kind():
    term = RewardTermConfig(name="judge_score", args={"backend": {**ENDPOINT, "max_tokens": 64}, "max_score": 5})
    assert isinstance(term.args.backend, EndpointJudgeConfig) and term.args.backend.max_tokens == 64
    term = RewardTermConfig(name="judge_pairwise", args={"backend": {"kind": "local", "model_path": "/m"}})
    assert isinstance(term.args.backend, LocalJudgeConfig) and term.args.backend.temperature == 0.0
    assert REWARDS["judge_score"] is JudgeScore and REWARDS["judge_pairwise"] is JudgePairwise


def test_endpoint_backend_needs_its_api_key(monkeypatch):
    monkeypatch.delenv("RF_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(RuntimeError, match="RF_TEST_JUDGE_KEY .* is not set"):
        build_backend(EndpointJudgeConfig(**{**ENDPOINT, "api_key_env": "RF_TEST_JUDGE_KEY"}))
    monkeypatch.setenv("RF_TEST_JUDGE_KEY", "sk-test")
    backend = build_backend(EndpointJudgeConfig(**{**ENDPOINT, "api_key_env": "RF_TEST_JUDGE_KEY"}))
    assert isinstance(backend, EndpointBackend) and backend.client.api_key == "sk-test"


def test_endpoint_that_does_not_answer_costs_the_sample():
    # Port 9 (discard) on loopback has no server: the connection error is recorded, nothing crashes.
    cfg = JudgeScoreConfig(backend={**ENDPOINT, "max_retries": 0, "timeout_s": 2})
    out = score_terms({"judge": JudgeScore(cfg)}, [Sample("q", "r")], IsolatedRunner(timeout_s=10))
    assert out.terms["judge"].tolist() == [0.0]
    assert out.errors[0].startswith("judge: APIConnectionError")
