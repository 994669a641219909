"""Verifiable math correctness: 1 if the response's final answer equals the reference, else 0.

The final answer is the last `\\boxed{...}` if the response has one, else the last number
literal (integer, decimal, a/b or \\frac{a}{b}). Only that candidate goes to `math-verify` for the
equivalence check (so "0.50", "1/2" and "\\frac{1}{2}" all match 0.5). Handing math-verify the
whole response is exploitable: a policy learns to restate the question ("To find 97 + 53, we
add them") and math-verify evaluates the restated expression to the right answer.
`extract: math_verify` keeps that behaviour for tasks whose answers are expressions.

sympy can run away on a crafted answer (`\\boxed{9^{9^{9}}}`: minutes holding the GIL), so the
reward runs in a worker process that `IsolatedRunner`'s timeout kills (`isolate_process`).
math-verify's own signal-based timeouts stay off: they only work in a main thread, and a timed-out
comparison comes back as "wrong" where the runner's timeout records an error.
"""
from __future__ import annotations

import re
from typing import Literal

from math_verify import parse, verify

from rewards.base import Basis, Expression, Format, Granularity, Reward, RewardConfig, Sample, Taxonomy

_NUMBER = re.compile(r"-?\\d?frac\{-?\d+\}\{\d+\}|-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?")


def final_answer(response: str) -> str | None:
    """Last \\boxed{...} content, else the last number literal, else None."""
    boxed = response.rfind("\\boxed{")
    if boxed >= 0:
        depth, start = 0, boxed + len("\\boxed{")
        for i in range(start, len(response)):
            depth += {"{": 1, "}": -1}.get(response[i], 0)
            if depth < 0:
                return response[start:i]
    numbers = _NUMBER.findall(response)
    return numbers[-1].replace(",", "").replace(" ", "") if numbers else None


class MathCorrectConfig(RewardConfig):
    correct: float = 1.0
    wrong: float = 0.0
    extract: Literal["final_answer", "math_verify"] = "final_answer"


class MathCorrect(Reward):
    Config = MathCorrectConfig
    taxonomy = Taxonomy(Basis.RULE, Format.SCALAR, Expression.EXPLICIT, Granularity.SEQUENCE)
    summary = "final answer equals the reference (math-verify equivalence): verifiable tasks"
    isolate_process = True

    def __setstate__(self, state: dict) -> None:
        """Unpickled in `IsolatedRunner`'s worker process: warm math-verify's LaTeX parser there
        (its first parse fills ANTLR caches, 0.1-0.5 s) rather than in the first timed call."""
        self.__dict__.update(state)
        self.score(Sample("", "\\frac{1}{2}", "0.5"))

    def score(self, sample: Sample) -> float:
        gold = parse(sample.answer, parsing_timeout=None)
        if not gold:
            raise ValueError(f"reference answer {sample.answer!r} does not parse")
        if self.cfg.extract == "final_answer":
            candidate = final_answer(sample.response)
            if candidate is None:
                return self.cfg.wrong
            candidate = f"${candidate}$"
        else:
            candidate = sample.response
        pred = parse(candidate, parsing_timeout=None)
        ok = bool(pred) and verify(gold, pred, timeout_seconds=None)
        return self.cfg.correct if ok else self.cfg.wrong
