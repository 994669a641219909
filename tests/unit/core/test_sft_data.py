"""SFT data (core/sft_data.py): files read as untrusted input, IFT conversations, and the
chat-template rendering into context / target token segments."""
import copy
import json

import pytest

from core.config import ConfigError
from core.data import Row, TaskConfig, arithmetic_rows, render_prompts
from core.sft_data import (EftSourceConfig, IftSourceConfig, conversation_segments, ift_conversations,
                           read_conversations)

KEY = "data.sources.0.path"
USER = {"role": "user", "content": "What is 3 + 4?"}
ANSWER = {"role": "assistant", "content": "7"}


def _file(tmp_path, *lines: str):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_both_forms_and_a_prompt_given_as_messages(tmp_path):
    path = _file(tmp_path,
                 json.dumps({"prompt": "What is 3 + 4?", "response": "7", "id": 12}),
                 "",
                 json.dumps({"messages": [{"role": "system", "content": ""}, USER, ANSWER,
                                          {"role": "user", "content": "And 4 + 4?"},
                                          {"role": "assistant", "content": "8"}]}),
                 json.dumps({"prompt": [USER, ANSWER, {"role": "user", "content": "Sure?"}], "response": "Yes."}))
    single, multi, context = read_conversations(str(path), KEY)
    assert single.messages == (USER, ANSWER) and single.where == f"{path}:1"
    assert [m["role"] for m in multi.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert multi.where == f"{path}:3"  # the blank line keeps its number
    assert context.messages[-1] == {"role": "assistant", "content": "Yes."} and len(context.messages) == 4


@pytest.mark.parametrize("line,message", [
    ('{"prompt": "q"', ":1: not valid JSON"),
    ('["q", "a"]', ":1: expected a JSON object with prompt and response, or messages, got a list"),
    ('{"question": "q", "answer": "a"}', ":1: needs prompt and response, or messages (keys: answer, question)"),
    ('{"prompt": "q"}', ":1: has no response"),
    ('{"prompt": "q", "response": "a", "messages": []}', ":1: has both prompt/response and messages"),
    ('{"prompt": "q", "response": "  "}', ":1: the response is only whitespace"),
    ('{"prompt": "q", "response": 7}', ":1: the response must be text, got a number (7)"),
    ('{"prompt": "", "response": "a"}', ":1: the prompt is empty"),
    ('{"messages": "hi"}', ":1: messages must be a non-empty list of {role, content}, got text"),
    ('{"messages": [{"role": "user", "content": "q"}]}', ":1: messages have no assistant turn: nothing to learn"),
    ('{"messages": [{"role": "assistant", "content": "a"}]}', ":1: messages[0] is an assistant turn"),
    ('{"messages": [{"role": "human", "content": "q"}, {"role": "assistant", "content": "a"}]}',
     ":1: messages[0].role must be one of system, user, assistant, got 'human'"),
    ('{"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]}', ":1: messages[0] has no role"),
    ('{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": "a"}]}',
     ":1: messages[0].content must be text, got null"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}',
     ":1: messages[1].content is empty"),
    ('{"messages": [{"role": "user", "content": "q"}, "a"]}',
     ":1: messages[1] must be an object {role, content}, got text"),
])
def test_a_bad_line_is_one_config_error_naming_key_file_and_line(tmp_path, line, message):
    path = _file(tmp_path, line)
    with pytest.raises(ConfigError) as err:
        read_conversations(str(path), KEY)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{KEY}: {path}") and message in text, text


def test_bad_bytes_and_empty_files(tmp_path):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "q", "response": "a"}\n{"prompt": "caf\xe9", "response": "a"}\n')
    with pytest.raises(ConfigError, match=r"latin.jsonl:2: not UTF-8 text"):
        read_conversations(str(latin), KEY)
    with pytest.raises(ConfigError, match=r"holds no rows"):
        read_conversations(str(_file(tmp_path)), KEY)
    with pytest.raises(ConfigError, match=r"no such file"):
        read_conversations(str(tmp_path / "nope.jsonl"), KEY)


def test_ift_is_every_distinct_train_problem_with_the_bare_answer_math_correct_accepts():
    from rewards.base import Sample
    from rewards.math_correct import MathCorrect, MathCorrectConfig

    cfg = IftSourceConfig(kind="ift")
    convs = ift_conversations(cfg)
    train, held_out = arithmetic_rows(cfg.task)
    # 3 operators x 10 x 10 = 300 problems; 100 held out for eval; train repeats the other 200
    assert len(convs) == len({r.id for r in train}) == 200
    questions = [c.messages[0]["content"].removesuffix(cfg.instruction) for c in convs]
    assert not set(questions) & {r.question for r in held_out}
    verify = MathCorrect(MathCorrectConfig())
    for conv, q in zip(convs[:20], questions):
        a, op, b = q.removeprefix("What is ").rstrip("?").split()
        answer = str({"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op])
        assert conv.messages[1] == {"role": "assistant", "content": answer}
        assert verify.score(Sample(conv.messages[0]["content"], answer, answer)) == 1.0


def test_eft_source_defaults_match_the_grpo_recipe():
    from cluster.recipe import load_recipe

    grpo = load_recipe("recipes/grpo_arith.yaml").task
    eft = EftSourceConfig(kind="eft")
    assert eft.task == grpo.arithmetic and eft.instruction == grpo.instruction


def _decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_single_turn_context_is_the_rollout_prompt_and_the_target_is_response_then_eos(tokenizer):
    segments = conversation_segments(tokenizer, (USER, ANSWER))
    (context, c_learnt), (target, t_learnt) = segments
    rendered = render_prompts([Row("q", USER["content"], "7")], tokenizer, TaskConfig())
    assert context == rendered.token_ids[0].tolist() and not c_learnt
    assert target == tokenizer("7", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] and t_learnt


def test_multi_turn_segments_cover_the_rendered_conversation_and_learn_only_assistant_turns(tokenizer):
    messages = ({"role": "system", "content": "Be brief."}, USER, ANSWER,
                {"role": "user", "content": "And 4 + 4?"}, {"role": "assistant", "content": "8"},
                {"role": "user", "content": "Thanks"})  # after the last assistant turn: dropped
    segments = conversation_segments(tokenizer, messages)
    assert [learnt for _, learnt in segments] == [False, True, False, True]
    full = tokenizer.apply_chat_template(list(messages[:5]), tokenize=False)
    # the ChatML rendering ends each turn with "<|im_end|>\n"; the last "\n" follows the last target
    assert _decode(tokenizer, [t for ids, _ in segments for t in ids]) == full.removesuffix("\n")
    assert [_decode(tokenizer, ids) for ids, learnt in segments if learnt] == ["7<|im_end|>", "8<|im_end|>"]
    assert _decode(tokenizer, segments[2][0]) == "\n<|im_start|>user\nAnd 4 + 4?<|im_end|>\n<|im_start|>assistant\n"


def test_without_a_chat_template_the_texts_are_concatenated(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    messages = (USER, ANSWER, {"role": "user", "content": " Again?"}, {"role": "assistant", "content": "7"})
    segments = conversation_segments(plain, messages)
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    assert segments == [(plain(USER["content"])["input_ids"], False), (ids("7") + [eos], True),
                        (ids(" Again?"), False), (ids("7") + [eos], True)]


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer):
    odd = copy.deepcopy(tokenizer)
    # the generation prompt names the turn number: turn 1's context no longer starts turn 2's
    odd.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|im_end|>{% endfor %}"
                         "{% if add_generation_prompt %}assistant {{ messages|length }}:{% endif %}")
    with pytest.raises(ValueError, match="does not render an assistant turn as its content then EOS"):
        conversation_segments(odd, (USER, ANSWER, USER, ANSWER))
    assert len(conversation_segments(odd, (USER, ANSWER))) == 2  # one turn: nothing to check
