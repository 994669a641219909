"""`rewardflow sft` on the driver (apps/sft.py): the recipe, the mixture, the held-out split, the
step order and the held-out loss; bad settings give one line."""
import json

import pytest

from apps.sft import build_examples, eval_losses, load_sft_config, split_held_out, step_batches
from core.config import ConfigError

RECIPE = "recipes/sft_arith.yaml"


def test_recipe_loads_with_ift_and_eft():
    cfg = load_sft_config(RECIPE)
    assert [s.kind for s in cfg.data.sources] == ["ift", "eft"] and cfg.model.path == "default"
    assert cfg.steps is not None and cfg.data.eval_fraction > 0


@pytest.mark.parametrize("overrides,message", [
    (["lr=0"], "lr: Input should be greater than 0 (got 0)"),
    (["epochs=2"], "epochs: set steps or epochs, not both (steps=20 is set; steps=null counts epochs)"),
    (["learner.num_workers=2", "batch_size=1"], "batch_size: 1 examples cannot feed 2 ranks"),
    (["data.sources.0.kind=chat"], "data.sources.0: unknown source kind 'chat'; one of file, ift, eft"),
    (["data.sources=[{path: a.jsonl}]"], "data.sources.0: a source needs a kind: one of file, ift, eft"),
    (["data.sources=[{kind: file}]"], "data.sources.0.path: Field required"),
    (["data.sources.1.n=0"], "data.sources.1.n: Input should be greater than or equal to 1 (got 0)"),
    (["data.sources.0.n=5"], "data.sources.0.n: unknown key"),
    (["data.eval_fraction=1"], "data.eval_fraction: Input should be less than 1 (got 1)"),
])
def test_config_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_sft_config(RECIPE, overrides)
    assert str(err.value) == message


def test_steps_null_counts_epochs():
    assert load_sft_config(RECIPE, ["steps=null", "epochs=2"]).epochs == 2


def _cfg(**over):
    return load_sft_config(RECIPE, [f"{k}={v}" for k, v in over.items()])


def test_step_batches_are_seeded_passes_without_a_repeat_within_a_batch():
    cfg = _cfg(steps="null", epochs=2, batch_size=3)
    batches = step_batches(7, cfg)
    assert len(batches) == 4  # 2 passes x ⌊7/3⌋ batches; each pass leaves one example out
    for one_pass in (batches[:2], batches[2:]):
        seen = [i for b in one_pass for i in b]
        assert len(seen) == len(set(seen)) == 6
    assert batches == step_batches(7, cfg) and batches[:2] != batches[2:]
    assert step_batches(7, _cfg(steps=5, batch_size=3)) == step_batches(7, _cfg(steps=6, batch_size=3))[:5]


def test_held_out_split_is_seeded_and_keeps_a_training_example():
    assert split_held_out(list(range(10)), 0.2, 0) == split_held_out(list(range(10)), 0.2, 0)
    train, held = split_held_out(list(range(10)), 0.2, 0)
    assert len(held) == 2 and sorted(train + held) == list(range(10))
    assert [len(p) for p in split_held_out([1, 2, 3], 0.01, 0)] == [2, 1]  # at least one held out
    assert [len(p) for p in split_held_out([1], 0.5, 0)] == [1, 0]  # but never every example
    assert split_held_out([1, 2], 0.0, 0)[1] == []


def test_the_mixture_counts_each_source_and_leaves_out_overlong_examples(tokenizer, tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"prompt": "What is 1 + 1?", "response": "2"}) + "\n"
                    + json.dumps({"prompt": "Say it long.", "response": "long " * 300}) + "\n")
    cfg = _cfg(**{"data.sources": f"[{{kind: ift}}, {{kind: eft, n: 4}}, {{kind: file, path: {chat}}}]",
                  "max_len": 400, "batch_size": 4})
    train, held_out, counts = build_examples(cfg, tokenizer)
    # ift: 200 problems, 20 held out; eft: 4 judge prompts, far longer than 400 tokens with the
    # tiny tokenizer's bytes; chat: 2 lines, the long one left out, the other not held out (one left)
    assert counts["ift"] == {"train": 180, "eval": 20, "overlong": 0}
    assert counts["eft"] == {"train": 0, "eval": 0, "overlong": 4}
    assert counts["chat"] == {"train": 1, "eval": 0, "overlong": 1}
    assert len(train) == 181 and list(held_out) == ["ift"] and all(len(e) <= 400 for e in train)
    with pytest.raises(ConfigError, match=r"^batch_size: 4 examples per step, but the sources leave 1 to train on "
                                          r"\(1 longer than max_len=400 left out\)$"):
        build_examples(_cfg(**{"data.sources": f"[{{kind: file, path: {chat}}}]", "max_len": 400,
                               "batch_size": 4}), tokenizer)


def test_a_bad_file_source_is_named_by_its_index(tmp_path, tokenizer):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "response": "a"}\n{"prompt": "q"}\n')
    with pytest.raises(ConfigError, match=rf"^data.sources.1.path: {bad}:2: has no response$"):
        build_examples(_cfg(**{"data.sources": f"[{{kind: ift}}, {{kind: file, path: {bad}}}]"}), tokenizer)


def test_a_bad_eft_template_is_one_line(tmp_path, tokenizer):
    template = tmp_path / "judge.txt"
    template.write_text("Grade {response}.")
    with pytest.raises(ConfigError, match=r"^data.sources.0.template: judge template .*missing \{prompt\}$"):
        build_examples(_cfg(**{"data.sources": f"[{{kind: eft, template: {template}}}]"}), tokenizer)


class _FakeTrainers:
    def __init__(self, sums):
        self.sums = sums

    def nll_sums(self, examples):
        return self.sums[examples[0]]


def test_held_out_loss_is_a_token_mean_per_source_and_over_all():
    trainers = _FakeTrainers({"a": {"nll_sum": 6.0, "tokens": 3.0}, "b": {"nll_sum": 1.0, "tokens": 1.0}})
    # a: 6/3 = 2; b: 1/1 = 1; all: (6 + 1) / (3 + 1) = 1.75, not the mean of the two (1.5)
    assert eval_losses(trainers, {"a": ["a"], "b": ["b"]}) == {"all": 1.75, "a": 2.0, "b": 1.0}
    assert eval_losses(trainers, {}) is None
