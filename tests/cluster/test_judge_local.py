"""LLM-as-judge with the `local` backend: a vLLM engine in this process, built on first use from
inside the reward isolation's worker thread, on the tiny random model (garbage answers: the
assertions are about mechanics, as in test_judge_endpoint.py)."""
import pytest
import torch.distributed as dist

from rewards.base import Sample
from rewards.isolation import IsolatedRunner, score_terms
from rewards.judge import (
    JudgePairwise,
    JudgePairwiseConfig,
    JudgeParseError,
    JudgeScore,
    JudgeScoreConfig,
)
from tests.cluster.test_judge_endpoint import SAMPLES

pytestmark = pytest.mark.cluster


def test_local_judge_pointwise_and_pairwise(tiny_model_path):
    backend = {"kind": "local", "model_path": tiny_model_path, "max_model_len": 512, "max_tokens": 48}
    pointwise = JudgeScore(JudgeScoreConfig(backend=backend))
    try:
        # Long enough for the engine to start inside the first call.
        out = score_terms({"judge": pointwise}, SAMPLES, IsolatedRunner(timeout_s=300))

        assert pointwise._backend.llm is not None
        for value, error in zip(out.terms["judge"], out.errors):
            if error is None:
                assert 0.0 <= value <= 1.0
            else:
                assert error.startswith("judge: JudgeParseError: ") and value == 0.0

        answers = pointwise._backend.complete(["Say hi.", "Score: ?"])
        assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

        # The same engine behind the other judges (one engine per process is enough for the test).
        engine = pointwise._backend
        pairwise = JudgePairwise(JudgePairwiseConfig(backend=backend), backend=engine)
        try:
            outcome = pairwise.prefer(SAMPLES[0], Sample(SAMPLES[0].prompt, "5"))
        except JudgeParseError as e:
            outcome = e
        assert isinstance(outcome, JudgeParseError) or outcome in (0.0, 0.25, 0.5, 0.75, 1.0)

        # Constrained decoding: even the random model's answers parse.
        constrained = JudgeScore(JudgeScoreConfig(backend=backend, constrained=True, max_explanation_chars=40),
                                 backend=engine)
        out = score_terms({"judge": constrained}, SAMPLES, IsolatedRunner(timeout_s=60))
        assert out.errors == [None] * len(SAMPLES)
        assert all(round(9 * v) == 9 * v and 0.0 <= v <= 1.0 for v in out.terms["judge"].tolist())
        pairwise = JudgePairwise(JudgePairwiseConfig(backend=backend, constrained=True, max_explanation_chars=40),
                                 backend=engine)
        assert pairwise.prefer(SAMPLES[0], Sample(SAMPLES[0].prompt, "5")) in (0.0, 0.25, 0.5, 0.75, 1.0)
    finally:
        pointwise.close()
    assert pointwise._backend is None and engine.llm is None
    assert not dist.is_initialized()  # the engine took its process groups with it
