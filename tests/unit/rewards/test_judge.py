"""LLM-as-judge rewards (rewards/judge.py): answer parsing, prompts, position-bias mitigation and failure recording,
with a fake backend (a list of canned answers or a rule over the prompt) in place of the model."""
import re

import pytest
from pydantic import ValidationError

from rewards.base import Sample
from rewards.isolation import IsolatedRunner, score_terms
from rewards.judge import (JudgePairwise, JudgePairwiseConfig, JudgeParseError, JudgeScore, JudgeScoreConfig,
                           Verdict, debiased_preference, parse_score, parse_verdict, score_regex, user_request,
                           verdict_regex)
from tests.helpers import JUDGE_ENDPOINT as ENDPOINT


class Canned:
    """Answers prompts with the next canned strings, and keeps the prompts it was sent."""

    def __init__(self, *answers: str):
        self.answers = list(answers)
        self.prompts: list[str] = []
        self.regexes: list[str | None] = []

    def complete(self, prompts, regex=None):
        self.prompts += prompts
        self.regexes.append(regex)
        out, self.answers = self.answers[:len(prompts)], self.answers[len(prompts):]
        return out


class PrefersGood:
    """A position-consistent judge: picks whichever slot holds the response containing "good"."""

    def complete(self, prompts, regex=None):
        return ["Verdict: A" if p.index("good") < p.index("[Response B]") else "Verdict: B" for p in prompts]


@pytest.mark.parametrize("text,expected", [
    ("Score: 7", 7.0),
    ("The answer is right but wordy.\nScore: 8/10", 8.0),
    ("**Score:** 6", 6.0),
    ("score = 7.5", 7.5),
    ("SCORE: 10", 10.0),
    ("Score: 1", 1.0),
    ("First thought Score: 3. On reflection the steps hold.\nScore: 9", 9.0),  # the last one counts
])
def test_parse_score(text, expected):
    assert parse_score(text, 1.0, 10.0) == expected


@pytest.mark.parametrize("text,message", [
    ("Score: 11", "outside 1..10"),
    ("Score: 0", "outside 1..10"),
    ("Score: -3", "outside 1..10"),
    ("Score: 4/5", "/5 scale"),
    ("Great answer, well done!", "no 'Score"),
    ("Score: seven", "no 'Score"),
    ("", "no 'Score"),
    ("\x00\ufffd##!! Graphic Graphic", "no 'Score"),
])
def test_parse_score_failures(text, message):
    with pytest.raises(JudgeParseError, match=message):
        parse_score(text, 1.0, 10.0)


@pytest.mark.parametrize("text,expected", [
    ("Verdict: A", Verdict.A),
    ("verdict: b", Verdict.B),
    ("Verdict: Tie", Verdict.TIE),
    ("Verdict: TIE.", Verdict.TIE),
    ("Verdict: [[B]]", Verdict.B),
    ("**Verdict:** Response A", Verdict.A),
    ("Both are close, but A is exact.\nVerdict: A.", Verdict.A),
    ("Verdict: A at first glance... no, B is right. Verdict: B", Verdict.B),  # the last one counts
    ("I pick [[A]]", Verdict.A),  # MT-Bench style without the label
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize("text", ["Both are fine.", "Verdict: Both", "Verdict: C", "", "A", "skepticism " * 20])
def test_parse_verdict_failures(text):
    with pytest.raises(JudgeParseError, match="no 'Verdict"):
        parse_verdict(text)


@pytest.mark.parametrize("in_order,swapped,expected", [
    (Verdict.A, Verdict.B, 1.0),    # ½(1 + 1 − 0): a wins in both slots
    (Verdict.B, Verdict.A, 0.0),    # ½(0 + 1 − 1): b wins in both slots
    (Verdict.A, Verdict.A, 0.5),    # ½(1 + 1 − 1): the first slot always wins, no preference left
    (Verdict.B, Verdict.B, 0.5),    # ½(0 + 1 − 0)
    (Verdict.TIE, Verdict.TIE, 0.5),  # ½(.5 + 1 − .5)
    (Verdict.TIE, Verdict.B, 0.75),  # ½(.5 + 1 − 0)
    (Verdict.A, Verdict.TIE, 0.75),  # ½(1 + 1 − .5)
])
def test_debiased_preference(in_order, swapped, expected):
    assert debiased_preference(in_order, swapped) == expected


def test_judge_score_normalises_and_sends_the_rubric_prompt():
    judge = Canned("Correct.\nScore: 7")
    reward = JudgeScore(JudgeScoreConfig(backend=ENDPOINT, rubric="Exact arithmetic."), backend=judge)
    # (7 − 1) / (10 − 1) = 6/9
    assert reward.score(Sample("What is 2+2?", "4")) == pytest.approx(6 / 9)
    [prompt] = judge.prompts
    assert "Exact arithmetic." in prompt and "What is 2+2?" in prompt and "[Response]\n4\n" in prompt
    assert "from 1 to 10" in prompt


SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.mark.parametrize("prompt,expected", [
    # SmolLM2's chat template output for one user message (as core.data renders task prompts)
    (SMOL_SYSTEM + "<|im_start|>user\nWhat is 3 + 4?\nAnswer with a number.<|im_end|>\n<|im_start|>assistant\n",
     "What is 3 + 4?\nAnswer with a number."),
    ("<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"
     "<|im_start|>assistant\n", "Q1\n\nQ2"),
    ("What is 3 + 4?", "What is 3 + 4?"),  # not ChatML: as it is
    ("[INST] Hi [/INST]", "[INST] Hi [/INST]"),
])
def test_user_request(prompt, expected):
    assert user_request(prompt) == expected


def test_judge_sees_the_request_without_the_policy_template():
    judge = Canned("Score: 5")
    reward = JudgeScore(JudgeScoreConfig(backend=ENDPOINT), backend=judge)
    reward.score(Sample(SMOL_SYSTEM + "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "4"))
    assert "[Request]\nWhat is 2+2?\n\n[Response]\n4\n" in judge.prompts[0]
    assert "<|im_start|>" not in judge.prompts[0]


def test_answer_regexes():
    assert score_regex(1, 3, 20) == "[^\\n]{0,20}\\nScore: (1|2|3)"
    assert verdict_regex(0) == "[^\\n]{0,0}\\nVerdict: (A|B|tie)"
    # Whatever matches them parses.
    assert parse_score("Fine.\nScore: 3", 1, 3) == 3.0 and re.fullmatch(score_regex(1, 3, 20), "Fine.\nScore: 3")
    assert re.fullmatch(score_regex(1, 3, 20), "Fine.\nScore: 4") is None
    assert parse_verdict("\nVerdict: tie") == Verdict.TIE and re.fullmatch(verdict_regex(0), "\nVerdict: tie")


def test_constrained_judges_send_their_answer_regex():
    judge = Canned("x\nScore: 7", "\nVerdict: A", "\nVerdict: B", "Score: 2")
    JudgeScore(JudgeScoreConfig(backend=ENDPOINT, constrained=True, max_score=7), backend=judge).score(Sample("q", "r"))
    JudgePairwise(JudgePairwiseConfig(backend=ENDPOINT, constrained=True, max_explanation_chars=5),
                  backend=judge).prefer(Sample("q", "x"), Sample("q", "y"))
    assert judge.regexes == [score_regex(1, 7, 300), verdict_regex(5)]
    JudgeScore(JudgeScoreConfig(backend=ENDPOINT), backend=judge).score(Sample("q", "r"))
    assert judge.regexes[-1] is None


def test_judge_score_raw_scale():
    cfg = JudgeScoreConfig(backend=ENDPOINT, min_score=0, max_score=5, normalize=False)
    assert JudgeScore(cfg, backend=Canned("Score: 4/5")).score(Sample("q", "r")) == 4.0


def test_parse_failures_are_recorded_per_sample_not_zeroed_silently():
    reward = JudgeScore(JudgeScoreConfig(backend=ENDPOINT),
                        backend=Canned("Score: 9", "I cannot grade this.", "Score: 42"))
    samples = [Sample("q", "r1"), Sample("q", "r2"), Sample("q", "r3")]
    out = score_terms({"judge": reward}, samples, IsolatedRunner(timeout_s=5))
    # sample 0: (9 − 1) / 9 = 8/9; samples 1, 2 carry their failure, value 0 is not a score
    assert out.terms["judge"].tolist() == pytest.approx([8 / 9, 0.0, 0.0])
    assert out.errors[0] is None
    assert out.errors[1].startswith("judge: JudgeParseError: no 'Score: <number>' in judge answer")
    assert out.errors[2] == "judge: JudgeParseError: judge score 42 outside 1..10"


def test_backend_answer_count_mismatch_is_an_error():
    reward = JudgeScore(JudgeScoreConfig(backend=ENDPOINT), backend=Canned())
    with pytest.raises(RuntimeError, match="0 answers for 1 prompts"):
        reward.score(Sample("q", "r"))


def test_pairwise_asks_both_orders_and_averages():
    judge = Canned("Verdict: A", "Verdict: A")
    reward = JudgePairwise(JudgePairwiseConfig(backend=ENDPOINT), backend=judge)
    # A judge that always picks the first slot: ½(1 + 1 − 1) = 0.5
    assert reward.prefer(Sample("q", "first"), Sample("q", "second")) == 0.5
    assert [p.index("first") < p.index("second") for p in judge.prompts] == [True, False]


def test_pairwise_consistent_judge_gives_a_full_preference():
    reward = JudgePairwise(JudgePairwiseConfig(backend=ENDPOINT), backend=PrefersGood())
    assert reward.prefer(Sample("q", "a good one"), Sample("q", "a bad one")) == 1.0
    assert reward.prefer(Sample("q", "a bad one"), Sample("q", "a good one")) == 0.0


def test_pairwise_single_order():
    judge = Canned("Verdict: tie")
    reward = JudgePairwise(JudgePairwiseConfig(backend=ENDPOINT, both_orders=False), backend=judge)
    assert reward.prefer(Sample("q", "x"), Sample("q", "y")) == 0.5
    assert len(judge.prompts) == 1


def test_pairwise_failures():
    reward = JudgePairwise(JudgePairwiseConfig(backend=ENDPOINT), backend=Canned("Verdict: A", "no idea"))
    with pytest.raises(JudgeParseError, match="no 'Verdict"):
        reward.prefer(Sample("q", "x"), Sample("q", "y"))
    with pytest.raises(ValueError, match="different prompts"):
        reward.prefer(Sample("q1", "x"), Sample("q2", "y"))
    with pytest.raises(TypeError, match="pairwise reward"):
        reward.score(Sample("q", "x"))


@pytest.mark.parametrize("args,message", [
    ({}, "backend"),
    ({"backend": {"kind": "endpoint", "model": "m"}}, "base_url"),
    ({"backend": {"kind": "vllm"}}, "kind"),
    ({"backend": {**ENDPOINT, "temprature": 0.5}}, "temprature"),
    ({"backend": ENDPOINT, "min_score": 5, "max_score": 5}, "max_score must be greater"),
    ({"backend": ENDPOINT, "template": "Grade {prompt}"}, "must contain {response}"),
    ({"backend": ENDPOINT, "template": "{response} {reponse}"}, "bad placeholder 'reponse'"),
    ({"backend": ENDPOINT, "constrained": True, "max_score": 9.5}, "integer min_score and max_score"),
])
def test_bad_config_names_the_problem(args, message):
    with pytest.raises(ValidationError, match=message):
        JudgeScoreConfig(**args)
