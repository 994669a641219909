"""Process rewards: split a response into steps, score each step, map step values onto tokens.

A step reward (granularity STEP) scores every step of a response and offers three views of the
same values:

- `score_steps(sample, steps) -> [S]`            one value per step;
- `score_tokens(sample, token_end_chars) -> [T]` each step's value on the last token of that step,
                                                 zeros elsewhere (what a token-level learner eats);
- `score(sample) -> float`                       an aggregate over steps (sum | min | last), so the
                                                 reward also composes as an ordinary sequence term.

Steps are half-open character spans `[start, end)` of the response. Tokens are described by
their end offsets in the decoded response: token t covers `[token_end_chars[t-1],
token_end_chars[t])` with `token_end_chars[-1] = 0` (see `token_end_offsets`). `Sample` carries
no token offsets, so `score_tokens` takes them explicitly.

`step_arith` is a rule-based process reward for the arithmetic task: a step that states
"a op b = c" earns +1 when the equation holds, −1 when it does not, 0 when it states none.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Literal

import numpy as np
from pydantic import model_validator

from core.data import OPS
from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy

SplitMode = Literal["blank_lines", "newline", "regex"]
_SEPARATORS = {"blank_lines": re.compile(r"\n[ \t]*\n\s*"), "newline": re.compile(r"\n")}


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    """[start, end) without surrounding whitespace, or None if nothing is left."""
    segment = text[start:end]
    stripped = segment.lstrip()
    if not stripped:
        return None
    left = start + len(segment) - len(stripped)
    return left, left + len(stripped.rstrip())


def split_steps(text: str, mode: SplitMode, pattern: str | None = None) -> list[tuple[int, int]]:
    """Character spans [start, end) of the steps of `text`, in order.

    blank_lines: steps are separated by one or more blank lines (paragraphs).
    newline:     every line is a step.
    regex:       every match of `pattern` starts a new step and belongs to it (a marker such as
                 r"Step \\d+:"); text before the first match, if any, is a step of its own.

    Every span is trimmed of surrounding whitespace; empty steps are dropped. So a step's last
    character, `text[end - 1]`, is never whitespace.
    """
    if mode == "regex":
        if pattern is None:
            raise ValueError("split mode 'regex' needs a pattern")
        starts = [m.start() for m in re.finditer(pattern, text) if m.end() > m.start()]
        bounds = list(zip([0, *starts], [*starts, len(text)]))
    else:
        cuts = list(_SEPARATORS[mode].finditer(text))
        bounds = list(zip([0, *(c.end() for c in cuts)], [*(c.start() for c in cuts), len(text)]))
    spans = (_trimmed(text, start, end) for start, end in bounds)
    return [span for span in spans if span is not None]


def step_token_rewards(
    step_values: np.ndarray | list[float],
    step_end_chars: np.ndarray | list[int],
    token_end_chars: np.ndarray | list[int],
) -> np.ndarray:
    """Place step values on tokens: [S], [S], [T] -> [T] (float64).

        t(s) = min{ t : token_end_chars[t] ≥ step_end_chars[s] }
        r[t] = Σ_{s : t(s) = t} step_values[s]

    step_end_chars[s] is the exclusive end of step s, so its last character is at e_s − 1 and
    t(s) is the token whose span [token_end_chars[t−1], token_end_chars[t]) covers it: the last
    token of the step. When a step ends mid-token, that token (which also holds the start of
    what follows) gets the value; steps ending in the same token add up. Tokens that add no
    character (token_end_chars[t] = token_end_chars[t−1], e.g. the first byte of a split UTF-8
    character, or EOS) never take a value: the earliest token reaching the offset does.
    This is how step-by-step PPO consumes a process reward (Math-Shepherd, Wang et al. 2024):
    the reward of step s arrives with its final token.

    token_end_chars must be non-decreasing; a step ending beyond the last token is an error.
    """
    values = np.asarray(step_values, dtype=np.float64)
    ends = np.asarray(step_end_chars, dtype=np.int64)
    token_ends = np.asarray(token_end_chars, dtype=np.int64)
    if values.shape != ends.shape:
        raise ValueError(f"{values.shape[0]} step values for {ends.shape[0]} step ends")
    if np.any(np.diff(token_ends) < 0):
        raise ValueError("token_end_chars must be non-decreasing")
    out = np.zeros(token_ends.shape[0], dtype=np.float64)
    if values.size == 0:
        return out
    if token_ends.size == 0 or ends.max() > token_ends[-1]:
        raise ValueError(f"a step ends at char {ends.max()}, beyond the last token's end "
                         f"{token_ends[-1] if token_ends.size else 0}")
    np.add.at(out, np.searchsorted(token_ends, ends, side="left"), values)
    return out


def token_end_offsets(tokenizer, response_ids: list[int]) -> list[int]:
    """End char offset of every response token in the decoded response, [T].

        end[t] = len(decode(ids[: t+1]))   if that decoding is a prefix of decode(ids)
               = end[t−1]                   otherwise (an incomplete UTF-8 character: the
                                            token completing it carries the character)

    Decoding prefixes works for any tokenizer with `decode` (no offset mapping needed) and
    matches the text a rollout reports (decoded with skip_special_tokens=True, so EOS adds no
    character). Cost: T decodes of up to T tokens, O(T²) — fine for the response lengths here.
    """
    full = tokenizer.decode(response_ids, skip_special_tokens=True)
    ends, last = [], 0
    for t in range(len(response_ids)):
        prefix = tokenizer.decode(response_ids[: t + 1], skip_special_tokens=True)
        if full.startswith(prefix):
            last = max(last, len(prefix))
        ends.append(last)
    return ends


class StepRewardConfig(RewardConfig):
    split: SplitMode = "newline"
    pattern: str | None = None
    # How `score` reduces step values to one number. min: a solution is as good as its worst
    # step, the usual PRM aggregation (Math-Shepherd, Wang et al. 2024; Lightman et al. 2023
    # use the product of step correctness probabilities, which equals min for 0/1 values).
    aggregate: Literal["sum", "min", "last"] = "min"

    @model_validator(mode="after")
    def _pattern_iff_regex(self):
        if (self.split == "regex") != (self.pattern is not None):
            raise ValueError("pattern is required for split 'regex' and only for it")
        try:
            re.compile(self.pattern or "")
        except re.error as e:
            raise ValueError(f"pattern is not a valid regular expression: {e}") from None
        return self


_AGGREGATES = {"sum": sum, "min": min, "last": lambda values: values[-1]}


class StepReward(Reward):
    """A process reward: subclasses implement `score_steps`; the rest follows from it.

    A response with no step scores 0 (sequence) and all-zero tokens.
    """

    Config = StepRewardConfig

    def steps(self, response: str) -> list[tuple[int, int]]:
        return split_steps(response, self.cfg.split, self.cfg.pattern)

    def score_steps(self, sample: Sample, steps: list[str]) -> list[float]:
        raise NotImplementedError

    def _values(self, sample: Sample, spans: list[tuple[int, int]]) -> list[float]:
        values = [float(v) for v in self.score_steps(sample, [sample.response[a:b] for a, b in spans])]
        if len(values) != len(spans):
            raise ValueError(f"{type(self).__name__}.score_steps gave {len(values)} values for {len(spans)} steps")
        return values

    def score_tokens(self, sample: Sample, token_end_chars: list[int]) -> np.ndarray:
        """Step values on the last token of each step, [T] (see `step_token_rewards`)."""
        spans = self.steps(sample.response)
        return step_token_rewards(self._values(sample, spans), [end for _, end in spans], token_end_chars)

    def score(self, sample: Sample) -> float:
        values = self._values(sample, self.steps(sample.response))
        return float(_AGGREGATES[self.cfg.aggregate](values)) if values else 0.0


_NUM = r"-?\d+(?:\.\d+)?"
_EQUATION = re.compile(rf"(?<![\d.])({_NUM})\s*([-+*/×÷−])\s*({_NUM})\s*=\s*({_NUM})")


def _divide(a: Fraction, b: Fraction) -> Fraction | None:
    return a / b if b else None


# The task's operators plus the spellings and division a written step may use.
_OPS = {**OPS, "−": OPS["-"], "×": OPS["*"], "/": _divide, "÷": _divide}


def equations_hold(step: str) -> bool | None:
    """Whether every "a op b = c" in `step` is exactly true (rational arithmetic); None if none.

    Division by zero counts as false.
    """
    found = _EQUATION.findall(step)
    if not found:
        return None
    return all(_OPS[op](Fraction(a), Fraction(b)) == Fraction(c) for a, op, b, c in found)


class StepArithConfig(StepRewardConfig):
    true: float = 1.0
    false: float = -1.0
    no_equation: float = 0.0


class StepArith(StepReward):
    Config = StepArithConfig
    taxonomy = Taxonomy(Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.STEP)
    summary = "each step's 'a op b = c' checked by exact arithmetic (+1 true, −1 false, 0 none): process reward"

    def score_steps(self, sample: Sample, steps: list[str]) -> list[float]:
        values = {True: self.cfg.true, False: self.cfg.false, None: self.cfg.no_equation}
        return [values[equations_hold(step)] for step in steps]
