"""The policy as its own judge (Yuan et al. 2024, "Self-Rewarding Language Models"): the additive
5-point LLM-as-a-judge prompt, its score parser, the aggregation of repeated judgments, and
EFT data (evaluation fine-tuning: judge-format SFT examples) built from the arithmetic task.

Pure text and numpy; the self-rewarding pair rules that consume the scores are in
`learners/self_rewarding.py`. A judgment is one sampled judge answer for one response; a
response judged N times gets the mean of its parsable scores, as in the paper (§2.3, N = 3).
"""
from __future__ import annotations

import random
import re
import string
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from core.config import Section
from core.data import OPS, ArithmeticConfig, TaskConfig, arithmetic_rows, operands

MAX_SCORE = 5
JUDGE_TERM = "self_judge"  # the scores term holding each response's mean judge score
PLACEHOLDERS = ("prompt", "response")

# Yuan et al. 2024, Figure 2, reworded with the same structure: the user question, the
# response, five criteria that each add a point, a short justification, then the score line.
DEFAULT_RUBRIC = """Read the user's question and the response below, and grade the response with the \
additive 5-point system that follows. Start from 0 and add one point for each criterion the response meets:
- Add 1 point if the response is on topic and gives some information relevant to the question, even \
if it is incomplete or partly off topic.
- Add a 2nd point if the response covers a substantial part of the question, even if it does not \
fully resolve it or give a direct answer.
- Add a 3rd point if the response answers the core of the question usefully, whatever its style.
- Add a 4th point if the response addresses the question directly and completely, and is clear and \
well organised, even if its clarity, concision or focus could still improve slightly.
- Add a 5th point if the response is exactly what the question asks for: correct, expert, with \
nothing extraneous, and of the highest quality.

User question:
{prompt}

Response:
{response}

After examining the question and the response:
- Justify your total briefly, in at most 100 words.
- Conclude with the line "Score: <total points>".
Assess the response against the criteria above, adding up the points systematically."""

# "Score" then ":", markdown emphasis allowed around both ("**Score:** 4", "Score: **4**"); the
# value is the rest of the token on the same line ("4", "4/5", "4.", "3.5", "five").
_SCORE = re.compile(r"\bscore\b[*_ \t]*:[*_ \t]*(\S*)", re.IGNORECASE)
_VALUE = re.compile(r"(\d+)(?:/(\d+))?")


def check_template(template: str, where: str = "judge template") -> None:
    """One-line ValueError unless the template's only fields are `{prompt}` and `{response}`,
    each present (as plain names: no index, attribute, conversion or format spec). Literal
    braces are written doubled, "{{" and "}}" (str.format)."""
    try:
        fields = [(name, conv, spec) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as e:
        raise ValueError(f"{where}: malformed braces ({e}); write a literal brace as {{{{ or }}}}") from None
    for name, conv, spec in fields:
        if name not in PLACEHOLDERS or conv or spec:
            field = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"{where}: unknown field {field}; the only fields are {{prompt}} and {{response}}")
    missing = [f"{{{p}}}" for p in PLACEHOLDERS if p not in {name for name, _, _ in fields}]
    if missing:
        raise ValueError(f"{where}: missing {' and '.join(missing)}")


class SelfJudgeConfig(Section):
    """How the policy judges its own responses (`algo.judge` of self-rewarding recipes)."""

    k: int = Field(3, ge=1)  # judgments per response, averaged (the paper: 3)
    temperature: float = Field(0.7, ge=0)
    max_new_tokens: int = Field(96, ge=8)  # room for a short justification and the score line
    # A template file with {prompt} and {response}; None: DEFAULT_RUBRIC.
    template: str | None = None
    # Decode each judgment under "<one line of justification>\nScore: <0-5>" (vLLM structured
    # outputs), so that every judgment parses: for policies too small to follow the format.
    constrained: bool = False

    def answer_regex(self) -> str | None:
        """The pattern a constrained judgment is decoded under (a justification line of at most one
        character per token of the budget, so the score line always fits); None when unconstrained."""
        from rewards.judge import score_regex

        return score_regex(0, MAX_SCORE, self.max_new_tokens - 8) if self.constrained else None

    @field_validator("template")
    @classmethod
    def _readable(cls, path: str | None) -> str | None:
        if path is not None:
            load_template(path)
        return path

    def template_text(self) -> str:
        return DEFAULT_RUBRIC if self.template is None else load_template(self.template)


def load_template(path: str | Path) -> str:
    """A judge template file (UTF-8), checked by `check_template`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"judge template {path}: cannot read it ({type(e).__name__}: {e})") from None
    check_template(text, f"judge template {path}")
    return text


def render_judge_prompt(template: str, prompt: str, response: str) -> str:
    """The judge's prompt for one response. The prompt and response are data: braces in them
    are copied as they are (str.format does not parse the values it substitutes)."""
    check_template(template)
    return template.format(prompt=prompt, response=response)


def parse_score(text: str) -> int | None:
    """The integer of the LAST "Score: N" in a judge answer, or None when it does not read as
    an integer 0..5.

    Case-insensitive; markdown emphasis around the label or the value is allowed ("**Score:** 4",
    "Score: **4**"), and so is sentence punctuation after it ("Score: 4."). "N/5" reads as N (the
    rubric's own scale); "N/10" or any other denominator is None. The last "Score:" decides even
    when an earlier one would parse: a judge that revises its score meant the revision, and one
    that ends on a malformed score line has not followed the format. Out of range (6, -1),
    fractional ("3.5"), words ("five"), an empty value and no "Score:" at all are None.
    """
    matches = _SCORE.findall(text)
    if not matches:
        return None
    value = _VALUE.fullmatch(matches[-1].strip("*_").rstrip(".,;!").strip("*_"))
    if value is None or (value[2] is not None and int(value[2]) != MAX_SCORE):
        return None
    score = int(value[1])
    return score if score <= MAX_SCORE else None


def aggregate_judgments(scores_per_response: list[list[int | None]]) -> tuple[np.ndarray, dict[str, float]]:
    """Mean parsed score per response [R] (NaN where no judgment parsed), and stats.

        mean_r = (1 / |V_r|) · Σ_{s ∈ V_r} s,    V_r = the parsed (not None) scores of response r

    Stats: `judgments` (answers in all), `parsed` (answers with a score), `parse_rate`
    (parsed / judgments, NaN with no judgments), `unjudged` (responses with no parsed score).
    """
    means = np.full(len(scores_per_response), np.nan)
    judgments = parsed = 0
    for r, scores in enumerate(scores_per_response):
        valid = [s for s in scores if s is not None]
        judgments += len(scores)
        parsed += len(valid)
        if valid:
            means[r] = float(np.mean(valid))
    return means, {"judgments": judgments, "parsed": parsed,
                   "parse_rate": parsed / judgments if judgments else float("nan"),
                   "unjudged": int(np.isnan(means).sum())}


# ---------------------------------------------------------------- EFT data from the arithmetic task

RIGHT_SCORE = 5  # direct, correct, nothing extraneous: all five criteria
WRONG_SCORE = 1  # on topic (a number for a number question), but it does not answer correctly
WRONG_DELTAS = (-3, -2, -1, 1, 2, 3)


def eft_examples(task_cfg: TaskConfig | ArithmeticConfig, n: int, seed: int,
                 template: str = DEFAULT_RUBRIC) -> list[dict[str, str]]:
    """`n` judge-format SFT examples {"prompt", "response"} on the arithmetic task's train split
    (never its eval problems): the prompt is the rendered judge prompt for a question and a
    candidate answer "The answer is x.", the response a one-sentence justification that works
    the problem out, then "Score: 5" for a right x or "Score: 1" for a wrong one (x = the right
    answer + δ, δ ∈ {±1, ±2, ±3}: the rubric's relevance point only).

    ⌈n/2⌉ examples are right and ⌊n/2⌋ wrong, in a seeded order; problems are drawn with
    replacement. With a `TaskConfig` the question carries the task's `instruction`, as the policy
    sees it. One JSON object per line (`json.dumps(example)`) is the `{"prompt", "response"}`
    JSONL that supervised fine-tuning reads.
    """
    if isinstance(task_cfg, TaskConfig):
        if task_cfg.kind != "arithmetic":
            raise ValueError(f"eft_examples: needs the arithmetic task, got task.kind={task_cfg.kind}")
        arith, instruction = task_cfg.arithmetic, task_cfg.instruction
    else:
        arith, instruction = task_cfg, ""
    check_template(template)
    train, _ = arithmetic_rows(arith)
    rng = random.Random(seed)
    right = [True] * ((n + 1) // 2) + [False] * (n // 2)
    rng.shuffle(right)
    out = []
    for is_right in right:
        row = rng.choice(train)
        a, op, b = operands(row.question)
        value = OPS[op](int(a), int(b))
        given = value if is_right else value + rng.choice(WRONG_DELTAS)
        out.append({"prompt": render_judge_prompt(template, row.question + instruction, f"The answer is {given}."),
                    "response": _justification(a, op, b, value, given)})
    return out


def _justification(a: str, op: str, b: str, value: int, given: int) -> str:
    if given == value:
        return (f"{a} {op} {b} = {value}, and the response answers {given}: it is correct, direct and has "
                f"nothing extraneous, so it meets all five criteria.\nScore: {RIGHT_SCORE}")
    return (f"{a} {op} {b} = {value}, but the response answers {given}: it is on topic, which earns the "
            f"first point, but it does not answer the question correctly.\nScore: {WRONG_SCORE}")
