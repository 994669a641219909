"""Supervised fine-tuning data: conversations from files (untrusted input), the arithmetic task's
questions with their answers (IFT), the recipe's `data` section, and the chat-template rendering
of a conversation into token segments.

An example is a conversation, a list of {role, content} messages whose assistant turns are the
text to learn. A file record is one of
    {"prompt": ..., "response": "..."}   the prompt is text (one user turn) or a list of messages
                                         (context only); the response is the one turn learnt
    {"messages": [{"role", "content"}, ...]}   every assistant turn is learnt, nothing else
Other keys are ignored. Judge-format examples (EFT) come from `rewards/self_judge.py`;
`apps/sft.py` builds every source and mixes them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from core.config import ConfigError, Section
from core.data import ArithmeticConfig, arithmetic_rows
from core.prompt_files import kind_of, prompt_value, read_records

ROLES = ("system", "user", "assistant")
# The GRPO recipe's task and instruction: IFT and EFT examples word the questions as it does.
GRPO_TASK = ArithmeticConfig(ops=["+", "-", "*"])
GRPO_INSTRUCTION = " Answer with just the number."


class FileSourceConfig(Section):
    """Conversations from a JSONL file (or a JSON array, or Parquet: `core.prompt_files`)."""

    kind: Literal["file"]
    path: str


class IftSourceConfig(Section):
    """Every distinct problem of the arithmetic task's train split, answered with the bare number
    ("What is 3 + 4?" -> "7"): the final number `math_correct` reads. Eval problems never appear."""

    kind: Literal["ift"]
    task: ArithmeticConfig = GRPO_TASK
    instruction: str = GRPO_INSTRUCTION


class EftSourceConfig(Section):
    """`n` judge-format examples (`rewards.self_judge.eft_examples`): the self-judge's prompt on a
    candidate answer, a justification and the score line."""

    kind: Literal["eft"]
    n: int = Field(64, ge=1)
    task: ArithmeticConfig = GRPO_TASK
    instruction: str = GRPO_INSTRUCTION
    seed: int = 0
    # A judge template file with {prompt} and {response}; None: the default rubric.
    template: str | None = None


SOURCES: dict[str, type[Section]] = {"file": FileSourceConfig, "ift": IftSourceConfig, "eft": EftSourceConfig}


def _source(data: Any) -> Any:
    """A source section of the class its `kind` names (the error then names `data.sources.i.key`)."""
    if isinstance(data, BaseModel):
        return data
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"a source needs a kind: one of {', '.join(SOURCES)}")
    if data["kind"] not in SOURCES:
        raise ValueError(f"unknown source kind {data['kind']!r}; one of {', '.join(SOURCES)}")
    return SOURCES[data["kind"]](**data)


SourceConfig = Annotated[FileSourceConfig | IftSourceConfig | EftSourceConfig, BeforeValidator(_source)]


class SFTDataConfig(Section):
    """The sources, mixed: their examples are pooled and shuffled together."""

    sources: list[SourceConfig] = Field(min_length=1)
    # Share of each source's examples held out (seeded) for the eval loss; 0: no eval loss.
    eval_fraction: float = Field(0.0, ge=0, lt=1)


@dataclass(frozen=True)
class Conversation:
    messages: tuple[dict[str, str], ...]
    where: str  # "file:line", "ift 'What is 3 + 4?'", ...: names the example in an error


def read_conversations(path: str, key: str) -> list[Conversation]:
    """Every record of the file as a conversation; any problem is one ConfigError line naming
    `key`, the file and the line."""
    fields = "prompt and response, or messages"
    return [_conversation(record, where, key) for where, record in read_records(path, key, fields)]


def _conversation(record: dict, where: str, key: str) -> Conversation:
    single = "prompt" in record or "response" in record
    if single and "messages" in record:
        raise ConfigError(f"{key}: {where}: has both prompt/response and messages; give one of the two")
    if "messages" in record:
        messages = _messages(record["messages"], where, key, "messages")
        if not any(m["role"] == "assistant" for m in messages):
            raise ConfigError(f"{key}: {where}: messages have no assistant turn: nothing to learn")
        return Conversation(messages, where)
    if not single:
        raise ConfigError(f"{key}: {where}: needs prompt and response, or messages "
                          f"(keys: {', '.join(sorted(record)) or 'none'})")
    for name in ("prompt", "response"):
        if name not in record:
            raise ConfigError(f"{key}: {where}: has no {name}")
    prompt = prompt_value(record["prompt"], where, key)
    context = (_messages(prompt, where, key, "prompt") if isinstance(prompt, list)
               else ({"role": "user", "content": prompt},))
    response = _text(record["response"], where, key, "the response")
    return Conversation((*context, {"role": "assistant", "content": response}), where)


def _messages(value: Any, where: str, key: str, name: str) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: {where}: {name} must be a non-empty list of {{role, content}}, got {kind_of(value)}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise ConfigError(f"{key}: {where}: {name}[{i}] must be an object {{role, content}}, got {kind_of(m)}")
        if "role" not in m:
            raise ConfigError(f"{key}: {where}: {name}[{i}] has no role")
        if m["role"] not in ROLES:
            raise ConfigError(f"{key}: {where}: {name}[{i}].role must be one of {', '.join(ROLES)}, "
                              f"got {m['role']!r:.60}")
        what = f"{name}[{i}].content"
        content = _text(m.get("content"), where, key, what) if m["role"] == "assistant" else m.get("content")
        if not isinstance(content, str):
            raise ConfigError(f"{key}: {where}: {what} must be text, got {kind_of(content)}")
        out.append({"role": m["role"], "content": content})
    if out[0]["role"] == "assistant":
        raise ConfigError(f"{key}: {where}: {name}[0] is an assistant turn; put a user or system turn first")
    return tuple(out)


def _text(value: Any, where: str, key: str, what: str) -> str:
    """Text to learn: a string that is not blank."""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: {where}: {what} must be text, got {kind_of(value)}")
    if not value.strip():
        raise ConfigError(f"{key}: {where}: {what} is {'empty' if not value else 'only whitespace'}")
    return value


def ift_conversations(cfg: IftSourceConfig) -> list[Conversation]:
    """One conversation per distinct train problem, in the split's seeded order."""
    train, _ = arithmetic_rows(cfg.task)
    rows = {r.id: r for r in train}.values()  # a small problem space repeats problems
    return [Conversation(({"role": "user", "content": r.question + cfg.instruction},
                          {"role": "assistant", "content": r.answer}), f"ift {r.question!r}") for r in rows]


def pair_conversations(pairs: list[dict[str, str]], name: str) -> list[Conversation]:
    """{"prompt", "response"} dicts (e.g. `eft_examples`) as conversations."""
    return [Conversation(({"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["response"]}),
                         f"{name} example {i}") for i, p in enumerate(pairs, 1)]


def source_name(cfg: Section) -> str:
    return Path(cfg.path).stem if isinstance(cfg, FileSourceConfig) else cfg.kind


# -- rendering: a conversation as token segments ----------------------------------------------


def conversation_segments(tokenizer, messages: tuple[dict[str, str], ...]) -> list[tuple[list[int], bool]]:
    """(token ids, learnt) segments whose concatenation is the example: context (learnt False),
    then each assistant turn's content followed by EOS (learnt True). Turns after the last
    assistant turn are dropped (nothing learnt there conditions on them).

    With a chat template, the context before assistant turn i is the template's rendering of
    turns < i with the generation prompt, minus the text already covered, so the tokens before a
    response are exactly the prompt ids a rollout would see (`core.data.render_prompts`), and the
    response is tokenized on its own, as vLLM generates it. The template must render a finished
    assistant turn as its content then EOS (ChatML does); else a ValueError. Without a chat
    template: the plain concatenation of the contents (the first with the tokenizer's special
    tokens, such as BOS), each assistant content followed by EOS.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token to end a response with")

    def ids(text: str, special: bool = False) -> list[int]:
        return tokenizer(text, add_special_tokens=special)["input_ids"] if text else []

    templated = bool(getattr(tokenizer, "chat_template", None))
    segments, covered, context = [], "", ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            context += m["content"]
            continue
        if templated:
            rendered = tokenizer.apply_chat_template(list(messages[:i]), tokenize=False, add_generation_prompt=True)
            if not rendered.startswith(covered):
                raise ValueError("the chat template does not render an assistant turn as its content then EOS, "
                                 "so a later turn's context does not extend the earlier one")
            segments.append((ids(rendered[len(covered):]), False))
            covered = rendered + m["content"] + tokenizer.eos_token
        else:
            segments.append((ids(context, special=not segments), False))
            context = ""
        segments.append((ids(m["content"]) + [tokenizer.eos_token_id], True))
    return segments
