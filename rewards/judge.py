"""LLM-as-judge rewards: pointwise (rubric → score) and pairwise (which of two responses is better).

Taxonomy: basis judge/self, expression explicit, granularity sequence; format scalar for
`JudgeScore`, pairwise for `JudgePairwise`.

The judge model sits behind a backend with one method, `complete(prompts, regex=None) -> list[str]`
(`rewards/judge_backends.py`): any OpenAI-compatible endpoint (`vllm serve`, a hosted API) or a
vLLM engine inside the reward actor's own process. Prompt building and answer parsing are pure
functions of text. Each call blocks on the judge: the reward role's `timeout_s` must cover one
judge answer (two for pairwise), and for `local` the engine start on first use.

A judge answer that does not parse raises `JudgeParseError`. The reward actor's isolation
(`rewards.isolation.IsolatedRunner`) records it as that sample's error (`reward/errors`), so a
malformed answer is never a crash of the run nor a silent 0 passed off as a score. An
out-of-range score is a parse failure too, not clipped: the judge did not follow the rubric.

Pairwise position bias (judges favour the first, or the second, slot; Zheng et al. 2023,
"Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", §3.3): with `both_orders` (the default)
the judge sees (a, b) and (b, a), and `prefer` returns the mean of the two verdicts, each read as
P(a ≻ b) ∈ {0, 0.5, 1}. A judge that always says "A" then yields 0.5, not a preference.

With `constrained`, the answer is decoded under a regex of the expected format (vLLM structured
outputs), so even a small judge's answer parses; an unconstrained answer is parsed leniently.
"""
from __future__ import annotations

import re
import threading
from enum import Enum

from pydantic import Field, model_validator

from rewards.base import (Basis, Expression, Format, Granularity, PairwiseReward, Reward, RewardConfig,
                          Sample, Taxonomy)
from rewards.judge_backends import JudgeBackend, JudgeBackendConfig, LocalJudgeConfig, build_backend

POINTWISE_TEMPLATE = """You are grading a response to a user's request.

Rubric:
{rubric}

[Request]
{prompt}

[Response]
{response}

Grade the response from {min_score:g} to {max_score:g} following the rubric. Explain briefly, then end \
with a final line of the form "Score: <number>"."""

PAIRWISE_TEMPLATE = """You are comparing two responses to the same user request.

Criteria:
{rubric}

[Request]
{prompt}

[Response A]
{response_a}

[Response B]
{response_b}

Decide which response is better under the criteria. Explain briefly, then end with a final line \
"Verdict: A", "Verdict: B" or "Verdict: tie"."""

DEFAULT_RUBRIC = "Helpful, correct, and concise: answers the request directly without errors."

_NUMBER = r"(-?\d+(?:\.\d+)?)"
_SCORE = re.compile(rf"\bscore\b\s*\**\s*[:=]\s*\**\s*{_NUMBER}(?:\s*/\s*{_NUMBER})?", re.IGNORECASE)
_VERDICT = re.compile(
    r"\bverdict\b\s*\**\s*[:=]\s*\**\s*\[*\s*(?:response\s+|assistant\s+)?(a|b|tie)\b\s*\]*", re.IGNORECASE)
_BRACKETED = re.compile(r"\[\[\s*(a|b|tie)\s*\]\]", re.IGNORECASE)
_CHATML_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?=<\|im_end\|>|<\|im_start\|>|\Z)", re.DOTALL)


class JudgeParseError(ValueError):
    """The judge's answer holds no usable score or verdict (recorded per sample, never a crash)."""


def _excerpt(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else "…" + text[-limit:])


def parse_score(text: str, min_score: float, max_score: float) -> float:
    """The last "Score: x" (or "Score: x/max") in the judge's answer, in [min_score, max_score].

    Markdown emphasis around the label or the number is allowed ("**Score:** 8"). Raises
    JudgeParseError when there is no score, when it lies outside the range, or when a "/denominator"
    names a scale other than max_score.
    """
    matches = _SCORE.findall(text)
    if not matches:
        raise JudgeParseError(f"no 'Score: <number>' in judge answer {_excerpt(text)}")
    value, scale = matches[-1]
    if scale and float(scale) != max_score:
        raise JudgeParseError(f"judge scored on a /{scale} scale, rubric is {min_score:g}..{max_score:g}")
    score = float(value)
    if not min_score <= score <= max_score:
        raise JudgeParseError(f"judge score {score:g} outside {min_score:g}..{max_score:g}")
    return score


class Verdict(str, Enum):
    A = "a"
    B = "b"
    TIE = "tie"

    @property
    def first_preferred(self) -> float:
        """P(response A ≻ response B) that this verdict states: 1, 0 or 0.5."""
        return {Verdict.A: 1.0, Verdict.B: 0.0, Verdict.TIE: 0.5}[self]


def parse_verdict(text: str) -> Verdict:
    """The last "Verdict: A|B|tie" in the judge's answer (case-insensitive; "[[A]]", "Response A" and
    markdown emphasis allowed); failing that, the last bare "[[A]]"/"[[B]]"/"[[tie]]" (MT-Bench style).
    Raises JudgeParseError when neither is present."""
    matches = _VERDICT.findall(text) or _BRACKETED.findall(text)
    if not matches:
        raise JudgeParseError(f"no 'Verdict: A|B|tie' in judge answer {_excerpt(text)}")
    return Verdict(matches[-1].lower())


def debiased_preference(in_order: Verdict, swapped: Verdict) -> float:
    """P(a ≻ b) from two judgements with the responses in both slots.

        p = ½ · (v(a, b) + 1 − v(b, a)),   v(x, y) = P(slot A ≻ slot B) stated by the verdict

    where `in_order` judged (A=a, B=b) and `swapped` judged (A=b, B=a).
    """
    return 0.5 * (in_order.first_preferred + 1.0 - swapped.first_preferred)


def score_regex(min_score: int, max_score: int, max_explanation_chars: int) -> str:
    """Answers a constrained pointwise judge can give: an explanation line, then "Score: n" with n
    an integer in [min_score, max_score]."""
    values = "|".join(str(v) for v in range(min_score, max_score + 1))
    return rf"[^\n]{{0,{max_explanation_chars}}}\nScore: ({values})"


def verdict_regex(max_explanation_chars: int) -> str:
    """Answers a constrained pairwise judge can give: an explanation line, then the verdict."""
    return rf"[^\n]{{0,{max_explanation_chars}}}\nVerdict: (A|B|tie)"


class JudgeConfig(RewardConfig):
    backend: JudgeBackendConfig
    rubric: str = DEFAULT_RUBRIC
    # Decode the answer under its format (vLLM structured outputs: the local backend or a vLLM
    # server): a one-line explanation of at most `max_explanation_chars`, then the score or
    # verdict line. The answer then always parses (unless cut off by max_tokens).
    constrained: bool = False
    max_explanation_chars: int = Field(300, ge=0)


class JudgeScoreConfig(JudgeConfig):
    template: str = POINTWISE_TEMPLATE
    min_score: float = 1.0
    max_score: float = 10.0
    # Map the judge's score linearly onto [0, 1]; False returns it on the rubric's own scale.
    normalize: bool = True

    @model_validator(mode="after")
    def _check(self):
        if self.max_score <= self.min_score:
            raise ValueError("max_score must be greater than min_score")
        if self.constrained and not (self.min_score.is_integer() and self.max_score.is_integer()):
            raise ValueError("constrained decoding needs integer min_score and max_score")
        _check_template(self.template, POINTWISE_TEMPLATE)
        return self

    def answer_regex(self) -> str | None:
        if not self.constrained:
            return None
        return score_regex(int(self.min_score), int(self.max_score), self.max_explanation_chars)


class JudgePairwiseConfig(JudgeConfig):
    template: str = PAIRWISE_TEMPLATE
    # Ask the judge with the responses in both orders and average (position-bias mitigation).
    both_orders: bool = True

    @model_validator(mode="after")
    def _check(self):
        _check_template(self.template, PAIRWISE_TEMPLATE)
        return self

    def answer_regex(self) -> str | None:
        return verdict_regex(self.max_explanation_chars) if self.constrained else None


def _check_template(template: str, default: str) -> None:
    fields = {"rubric": "", "prompt": "", "response": "", "response_a": "", "response_b": "",
              "answer": "", "min_score": 0.0, "max_score": 0.0}
    try:
        template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"template: bad placeholder {e}; usable: {', '.join(sorted(fields))}") from None
    needed = {"{response}"} if "{response}" in default else {"{response_a}", "{response_b}"}
    missing = [n for n in sorted(needed) if n not in template]
    if missing:
        raise ValueError(f"template must contain {', '.join(missing)}")


def user_request(prompt: str) -> str:
    """The user's words in a prompt the policy saw rendered by a ChatML chat template (SmolLM2,
    Qwen: "<|im_start|>user\n...<|im_end|>"): its user turns, joined by blank lines. System turns
    are dropped. A prompt in any other format is returned as it is.

    The judge reads the request as plain text inside its own chat, not the policy's template markup.
    """
    turns = _CHATML_TURN.findall(prompt)
    users = [content.strip() for role, content in turns if role == "user"]
    return "\n\n".join(users) if users else prompt


def pointwise_prompt(cfg: JudgeScoreConfig, sample: Sample) -> str:
    return cfg.template.format(rubric=cfg.rubric, prompt=user_request(sample.prompt), response=sample.response,
                               answer=sample.answer, min_score=cfg.min_score, max_score=cfg.max_score)


def pairwise_prompt(cfg: JudgePairwiseConfig, first: Sample, second: Sample) -> str:
    return cfg.template.format(rubric=cfg.rubric, prompt=user_request(first.prompt), response_a=first.response,
                               response_b=second.response, answer=first.answer)


class _Judged:
    """Holds the backend: given (a fake in tests) or built from config on first use, once."""

    heavy_example = True

    @classmethod
    def example_config(cls) -> JudgeConfig:
        """A local judge on the tiny random test model, constrained: its answers always parse."""
        from core.models import build_tiny_model, cache_dir

        model = build_tiny_model(cache_dir() / "tiny-llama-test")
        return cls.Config(backend=LocalJudgeConfig(model_path=str(model), max_model_len=512, max_tokens=48),
                          constrained=True, max_explanation_chars=40)

    def __init__(self, cfg: JudgeConfig, backend: JudgeBackend | None = None):
        super().__init__(cfg)
        self._backend = backend
        self._lock = threading.Lock()

    def _complete(self, prompts: list[str], regex: str | None) -> list[str]:
        # The reward actor may call from a fresh thread after a timeout; build the backend once.
        with self._lock:
            if self._backend is None:
                self._backend = build_backend(self.cfg.backend)
        answers = self._backend.complete(prompts, regex)
        if len(answers) != len(prompts):
            raise RuntimeError(f"judge backend returned {len(answers)} answers for {len(prompts)} prompts")
        return answers

    def close(self) -> None:
        """Release the backend (a local engine shuts down; one passed in is shut for its sharers too)."""
        with self._lock:
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()


class JudgeScore(_Judged, Reward):
    Config = JudgeScoreConfig
    taxonomy = Taxonomy(Basis.JUDGE, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "LLM judge grades each response against a rubric (OpenAI-compatible endpoint or local vLLM)"

    def score(self, sample: Sample) -> float:
        [answer] = self._complete([pointwise_prompt(self.cfg, sample)], self.cfg.answer_regex())
        value = parse_score(answer, self.cfg.min_score, self.cfg.max_score)
        if self.cfg.normalize:
            return (value - self.cfg.min_score) / (self.cfg.max_score - self.cfg.min_score)
        return value


class JudgePairwise(_Judged, PairwiseReward):
    Config = JudgePairwiseConfig
    taxonomy = Taxonomy(Basis.JUDGE, Format.PAIRWISE, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "LLM judge picks the better of two responses, asked in both orders (position-bias mitigation)"

    def prefer(self, a: Sample, b: Sample) -> float:
        if a.prompt != b.prompt:
            raise ValueError("pairwise judge: the two responses answer different prompts")
        prompts = [pairwise_prompt(self.cfg, a, b)]
        if self.cfg.both_orders:
            prompts.append(pairwise_prompt(self.cfg, b, a))
        verdicts = [parse_verdict(answer) for answer in self._complete(prompts, self.cfg.answer_regex())]
        if not self.cfg.both_orders:
            return verdicts[0].first_preferred
        return debiased_preference(*verdicts)
