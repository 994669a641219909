"""Preference pairs for reward-model training: JSONL files of {prompt, chosen, rejected}, and a
seeded preference set built from the arithmetic task (a correct answer preferred to a wrong one).

The arithmetic set takes its problems from `core.data.arithmetic_rows`, so with the GRPO
recipe's task settings its held-out pairs are the GRPO eval problems, which the reward model
never trains on. Chosen and rejected share one phrasing: only correctness tells them apart,
except for the `off_format_frac` share of training pairs whose rejected response gives no answer
at all (prose, the question restated): a reward model that never saw such text may score it
above any number, and a policy trained on it learns to write it (docs/benchmarks.md).

With `sampled` set, the job also samples the policy the reward model will score (vLLM, in the
train-rm job) on every problem and adds pairs of its own responses ranked by the verifier
(`pairs_from_samples`): each wrong sample loses to a right one. Those are the texts GRPO will ask
the reward model about (mostly prose at temperature 1), which hand-written phrasings never cover.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import Field

from core.config import ConfigError, Section
from core.data import OPS, ArithmeticConfig, Row, arithmetic_rows, operands
from core.prompt_files import read_text
PHRASINGS = ("{x}", "The answer is {x}.", "{a} {op} {b} = {x}", "{x}. That is the answer.")
NON_ANSWERS = ("I am not sure.", "The number itself.", "It is just a number.", "Let me think about it.",
               "Numbers are words with no meaning.", "This question has no answer.",
               "A simple question about numbers.", "The sum of nothing at all.")  # no digits: never right


@dataclass(frozen=True)
class PreferencePair:
    prompt: str  # the user message; the reward model applies the chat template
    chosen: str
    rejected: str


class SampledPrefsConfig(Section):
    """Pairs from the policy's own samples, ranked by the final-answer check."""

    policy: str = "default"  # the model GRPO will train (the reward model's own start may differ)
    n: int = Field(4, ge=1)  # samples per problem
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(32, ge=1)


class ArithmeticPrefsConfig(Section):
    task: ArithmeticConfig = ArithmeticConfig(ops=["+", "-", "*"], train_size=200)
    # The same text the GRPO recipe appends to its prompts.
    instruction: str = " Answer with just the number."
    pairs_per_problem: int = Field(2, ge=1)
    # Share of training pairs whose rejected response is a non-answer (held-out pairs: none).
    off_format_frac: float = Field(0.0, ge=0, le=1)
    sampled: SampledPrefsConfig | None = None


def _wrong_answer(row: Row, rng: random.Random) -> int:
    """A plausible mistake: a near miss, or the result of another operator on the same operands."""
    a, op, b = operands(row.question)
    right = int(row.answer)
    other_ops = [fn(int(a), int(b)) for o, fn in OPS.items() if o != op]
    candidates = [right + d for d in (-3, -2, -1, 1, 2, 3)] + [v for v in other_ops if v != right]
    return rng.choice(candidates)


def _operands(row: Row) -> dict[str, str]:
    return dict(zip("a op b".split(), operands(row.question)))


def _pairs(rows: list[Row], cfg: ArithmeticPrefsConfig, rng: random.Random,
           off_format_frac: float = 0.0, off_rng: random.Random | None = None) -> list[PreferencePair]:
    out = []
    for row in rows:
        operands = _operands(row)
        for _ in range(cfg.pairs_per_problem):
            phrasing = rng.choice(PHRASINGS)
            wrong = _wrong_answer(row, rng)
            rejected = phrasing.format(x=wrong, **operands)
            if off_format_frac and off_rng.random() < off_format_frac:
                rejected = off_rng.choice(NON_ANSWERS)
            out.append(PreferencePair(
                prompt=row.question + cfg.instruction,
                chosen=phrasing.format(x=row.answer, **operands),
                rejected=rejected,
            ))
    return out


def pairs_from_samples(rows: list[Row], samples: list[list[str]], correct: list[list[bool]], instruction: str,
                       rng: random.Random) -> list[PreferencePair]:
    """One pair per distinct wrong sample of each problem: it loses to one of that problem's right
    samples, or to a written-out right answer when the policy got none right. Problems the policy
    always answers right give no pair (nothing to rank)."""
    out = []
    for row, texts, ok in zip(rows, samples, correct, strict=True):
        right = [t for t, good in zip(texts, ok) if good]
        wrong = list(dict.fromkeys(t for t, good in zip(texts, ok) if not good))
        for rejected in wrong:
            chosen = rng.choice(right) if right else rng.choice(PHRASINGS).format(x=row.answer, **_operands(row))
            out.append(PreferencePair(prompt=row.question + instruction, chosen=chosen, rejected=rejected))
    return out


def arithmetic_preferences(cfg: ArithmeticPrefsConfig) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out) pairs; held-out problems never appear in train (see `arithmetic_rows`)."""
    train_rows, eval_rows = arithmetic_rows(cfg.task)
    rng = random.Random(cfg.task.seed + 1)
    # The non-answer draws use their own stream: every other pair is the same for any fraction.
    off_rng = random.Random(cfg.task.seed + 2)
    return _pairs(train_rows, cfg, rng, cfg.off_format_frac, off_rng), _pairs(eval_rows, cfg, rng)


def write_pairs(pairs: list[PreferencePair], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(p)) + "\n" for p in pairs))
    return path


def read_pairs(path: str | Path, key: str = "data.train_path") -> list[PreferencePair]:
    """Pairs from a JSONL file with string fields prompt, chosen, rejected (other fields ignored)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{key}: {path}: no such file")
    pairs = []
    for n, line in enumerate(read_text(p, key).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: {path}:{n} is not valid JSON") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{key}: {path}:{n} is not a JSON object with prompt, chosen, rejected")
        missing = [k for k in ("prompt", "chosen", "rejected") if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            raise ConfigError(f"{key}: {path}:{n} lacks non-empty text field(s) {', '.join(missing)}")
        pairs.append(PreferencePair(row["prompt"], row["chosen"], row["rejected"]))
    if not pairs:
        raise ConfigError(f"{key}: {path} holds no preference pairs")
    return pairs
