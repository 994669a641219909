"""A corpus of malformed inputs (recipes, overrides, prompt and preference files, model
directories, checkpoints, serve-reward settings). Each is refused before Ray starts: exit 2, one
stderr line that names the culprit (key, file, line), no traceback, nothing created.

The commands run in-process through `apps.cli.main`; starting Ray fails the test, so an input
that slipped through every check cannot start a run.
"""
import json
from pathlib import Path

import pytest

from apps.cli import main

GRPO = "recipes/grpo_arith.yaml"
RM = "recipes/rm_arith.yaml"
JSONL_OK = '{"prompt": "What is 1 + 1?", "answer": "2"}\n'
SFT = "recipes/sft_arith.yaml"
SFT_OK = '{"prompt": "What is 1 + 1?", "response": "2"}\n'

# name -> file content (bytes or text), written into the case's input folder
FILES = {
    "dup.yaml": "train:\n  steps: 1\n  steps: 2\n",
    "list.yaml": "- model\n- task\n",
    "broken.yaml": "train: [1, 2\n",
    "latin1.yaml": b"train:\n  output_dir: caf\xe9\n",
    "badline.jsonl": JSONL_OK + '{"prompt": oops}\n' + JSONL_OK,
    "empty.jsonl": "",
    "blank.jsonl": "\n  \n\n",
    "ws.jsonl": JSONL_OK + '{"prompt": " \\t ", "answer": "2"}\n',
    "emptyprompt.jsonl": '{"prompt": "", "answer": "2"}\n' + JSONL_OK,
    "latin1.jsonl": (JSONL_OK + '{"prompt": "caf').encode() + b'\xe9", "answer": "2"}\n',
    "numprompt.jsonl": JSONL_OK + '{"prompt": 5, "answer": "2"}\n',
    "nullprompt.jsonl": JSONL_OK + '{"prompt": null, "answer": "2"}\n',
    "objanswer.jsonl": JSONL_OK + '{"prompt": "q", "answer": {"x": 1}}\n',
    "listanswer.jsonl": JSONL_OK + '{"prompt": "q", "answer": [1, 2]}\n',
    "boolanswer.jsonl": JSONL_OK + '{"prompt": "q", "answer": true}\n',
    "typo.jsonl": '{"promt": "q", "answer": "1"}\n{"promt": "r", "answer": "2"}\n',
    "nocol.jsonl": '{"question": "q", "answer": "1"}\n{"question": "r", "answer": "2"}\n',
    "onelacks.jsonl": JSONL_OK + '{"answer": "2"}\n',
    "array.jsonl": JSONL_OK + "[1, 2]\n",
    "array.json": json.dumps([{"prompt": "q", "answer": "1"}, 7]),
    "garbage.parquet": b"PAR1 this is not a parquet file",
    "prompts.csv": "prompt,answer\nq,1\n",
    "pairs_badline.jsonl": '{"prompt": "p", "chosen": "a", "rejected": "b"}\n{oops\n',
    "pairs_missing.jsonl": '{"prompt": "p", "chosen": "a"}\n',
    "pairs_latin1.jsonl": b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n',
    "pairs_empty.jsonl": "",
    "pairs_list.jsonl": '["p", "a", "b"]\n',
    "pairs_blank.jsonl": '{"prompt": "p", "chosen": " ", "rejected": "b"}\n',
    "sft_noassistant.jsonl": SFT_OK + '{"messages": [{"role": "user", "content": "q"}]}\n',
    "sft_role.jsonl": '{"messages": [{"role": "human", "content": "q"}, {"role": "assistant", "content": "a"}]}\n',
    "sft_noresponse.jsonl": SFT_OK + '{"prompt": "What is 1 + 1?"}\n',
    "serve_dup.yaml": "reward: math_correct\nport: 1\nport: 2\n",
    "afile": "not a directory",
}


def _model_dir(root: Path, kind: str) -> str:
    d = root / f"model_{kind}"
    d.mkdir()
    if kind == "garbage_config":
        (d / "config.json").write_text("{not json")
    if kind == "no_model_type":
        (d / "config.json").write_text('{"hidden_size": 8}')
    if kind == "no_tokenizer":
        (d / "config.json").write_text('{"model_type": "llama"}')
    return str(d)


def _checkpoint(root: Path, state: str | None) -> str:
    d = root / "ckpt" / "step_1"
    d.mkdir(parents=True)
    if state is not None:
        (d / "state.json").write_text(state)
    return str(d)


def _file_task(name: str, *extra: str) -> list[str]:
    return ["task.kind=file", f"task.file.path={{in}}/{name}", *extra]


def _pairs_file(name: str) -> list[str]:
    return ["train-rm", RM, "data.arithmetic=null", f"data.train_path={{in}}/{name}"]


def _sft_file(name: str) -> list[str]:
    return ["sft", SFT, f"data.sources=[{{kind: file, path: {{in}}/{name}}}]"]


# id -> (command words after the recipe's own words, the one line expected on stderr)
CASES = {
    # recipe files
    "recipe-missing": (["train", "{in}/nope.yaml"], "recipe {in}/nope.yaml: no such file"),
    "recipe-repeated-key": (["train", "{in}/dup.yaml"], "recipe {in}/dup.yaml: line 3 repeats the key 'steps'"),
    "recipe-not-a-mapping": (["train", "{in}/list.yaml"], "recipe {in}/list.yaml: top level must be a mapping of sections"),
    "recipe-invalid-yaml": (["train", "{in}/broken.yaml"], "recipe {in}/broken.yaml: not valid YAML"),
    "recipe-not-utf8": (["train", "{in}/latin1.yaml"], "recipe {in}/latin1.yaml: not UTF-8 text"),
    # overrides and values
    "unknown-key": (["train", GRPO, "algo.nope=1"], "algo.nope: unknown key"),
    "negative-clip": (["train", GRPO, "algo.clip_eps=-1"], "algo.clip_eps: Input should be greater than 0 (got -1)"),
    "infinite-lr": (["train", GRPO, "algo.lr=.inf"], "algo.lr: Input should be a finite number (got inf)"),
    "nan-weight": (["train", GRPO, "rewards.0.weight=.nan"], "rewards.0.weight: Input should be a finite number"),
    "nan-temperature": (["train", GRPO, "rollout.temperature=.nan"], "rollout.temperature: Input should be a finite number"),
    "infinite-clip-bound": (["train", GRPO, "reward.combine.clip=[0, .inf]"], "reward.combine.clip.1: Input should be a finite number"),
    "infinite-grad-clip": (["train", GRPO, "learner.grad_clip=.inf"], "learner.grad_clip: Input should be a finite number"),
    "nan-reward-arg": (["train", GRPO, "rewards=[{name: length_penalty, args: {coef: .nan}}]"], "rewards.0.args.coef: Input should be a finite number"),
    "bool-for-int": (["train", GRPO, "train.steps=true"], "train.steps: expected a number, got a boolean (got True)"),
    "bool-for-float": (["train", GRPO, "train.sync_bucket_mb=false"], "train.sync_bucket_mb: expected a number, got a boolean"),
    "fraction-for-int": (["train", GRPO, "train.steps=1.5"], "train.steps: Input should be a valid integer"),
    "override-no-key": (["train", GRPO, "=5"], "override '=5' is not key=value"),
    "override-repeated-key": (["train", GRPO, "algo={name: grpo, lr: 1, lr: 2}"], "override algo: the value line 1 repeats the key 'lr'"),
    "override-index": (["train", GRPO, "rewards.3.weight=1"], "rewards.3.weight: '3' is not an index of a list of 1"),
    "override-into-value": (["train", GRPO, "train.steps.x=1"], "train.steps.x: steps is a value, not a section"),
    "unknown-algorithm": (["train", GRPO, "algo={name: nope}"], "algo: unknown algorithm 'nope'"),
    "unknown-reward": (["train", GRPO, "rewards=[{name: nope}]"], "rewards.0.name: unknown reward 'nope'"),
    "reward-twice": (["train", GRPO, "rewards=[{name: math_correct}, {name: math_correct}]"], "rewards: math_correct listed twice"),
    "no-rewards": (["train", GRPO, "rewards=[]"], "rewards: List should have at least 1 item"),
    "reward-arg-unknown": (["train", GRPO, "rewards.0.args={bogus: 1}"], "rewards.0.args.bogus: unknown key"),
    # cluster, checkpoints, model directories, output directory
    "address-nothing-answers": (["train", GRPO, "cluster.address=127.0.0.1:1"], "cluster.address: nothing answers at 127.0.0.1:1"),
    "address-not-host-port": (["train", GRPO, "cluster.address=somewhere"], "cluster.address: 'somewhere' is not host:port"),
    "resume-no-checkpoint": (["train", GRPO, "train.resume=latest"], "train.resume=latest: no checkpoint in"),
    "resume-not-a-checkpoint": (["train", GRPO, "train.resume={ckpt_none}"], "is not a checkpoint directory (no state.json)"),
    "resume-state-not-json": (["train", GRPO, "train.resume={ckpt_garbage}"], "train.resume: {ckpt_garbage}"),
    "model-missing": (["train", GRPO, "model.path={in}/nowhere"], "model.path: {in}/nowhere is not a local Hugging Face model directory"),
    "model-no-config": (["train", GRPO, "model.path={model_empty}"], "(no config.json)"),
    "model-garbage-config": (["train", GRPO, "model.path={model_garbage_config}"], "config.json is not valid JSON"),
    "model-config-no-type": (["train", GRPO, "model.path={model_no_model_type}"], "config.json names no model_type"),
    "model-no-tokenizer": (["train", GRPO, "model.path={model_no_tokenizer}"], "model.path: {model_no_tokenizer}: cannot load its tokenizer"),
    "output-under-a-file": (["train", GRPO, "train.output_dir={in}/afile/out"], "train.output_dir: {in}/afile/out cannot be created: {in}/afile is a file"),
    # prompt files
    "prompts-invalid-json-line": (["train", GRPO, *_file_task("badline.jsonl")], "task.file.path: {in}/badline.jsonl:2: not valid JSON"),
    "prompts-empty-file": (["train", GRPO, *_file_task("empty.jsonl")], "task.file.path: {in}/empty.jsonl holds no rows"),
    "prompts-blank-lines": (["train", GRPO, *_file_task("blank.jsonl")], "task.file.path: {in}/blank.jsonl holds no rows"),
    "prompts-whitespace": (["train", GRPO, *_file_task("ws.jsonl")], "task.file.path: {in}/ws.jsonl:2: the prompt is only whitespace"),
    "prompts-empty-prompt": (["train", GRPO, *_file_task("emptyprompt.jsonl")], "{in}/emptyprompt.jsonl:1: the prompt is empty"),
    "prompts-not-utf8": (["train", GRPO, *_file_task("latin1.jsonl")], "task.file.path: {in}/latin1.jsonl:2: not UTF-8 text"),
    "prompts-number": (["train", GRPO, *_file_task("numprompt.jsonl")], "{in}/numprompt.jsonl:2: the prompt must be text or a list of chat messages"),
    "prompts-null": (["train", GRPO, *_file_task("nullprompt.jsonl")], "{in}/nullprompt.jsonl:2: the prompt must be text or a list of chat messages ({role, content}), got null"),
    "answer-object": (["train", GRPO, *_file_task("objanswer.jsonl")], "{in}/objanswer.jsonl:2: the answer must be text or a finite number, got an object"),
    "answer-list": (["train", GRPO, *_file_task("listanswer.jsonl")], "{in}/listanswer.jsonl:2: the answer must be text or a finite number, got a list"),
    "answer-boolean": (["train", GRPO, *_file_task("boolanswer.jsonl")], "{in}/boolanswer.jsonl:2: the answer must be text or a finite number, got a boolean"),
    "column-misspelt": (["train", GRPO, *_file_task("typo.jsonl")], "did you mean 'promt'?"),
    "column-missing": (["train", GRPO, *_file_task("nocol.jsonl")], "task.file.prompt_column: column 'prompt' not in {in}/nocol.jsonl (columns: answer, question)"),
    "column-missing-in-one-row": (["train", GRPO, *_file_task("onelacks.jsonl")], "task.file.prompt_column: {in}/onelacks.jsonl:2 lacks the column 'prompt'"),
    "prompts-array-line": (["train", GRPO, *_file_task("array.jsonl")], "{in}/array.jsonl:2: expected a JSON object"),
    "prompts-json-array-item": (["train", GRPO, *_file_task("array.json")], "{in}/array.json item 2: expected a JSON object"),
    "prompts-garbage-parquet": (["train", GRPO, *_file_task("garbage.parquet")], "{in}/garbage.parquet: not a readable Parquet file"),
    "prompts-csv": (["train", GRPO, *_file_task("prompts.csv")], "task.file.path: {in}/prompts.csv: expected a .jsonl, .json, .parquet file"),
    "prompts-missing-file": (["train", GRPO, *_file_task("nowhere.jsonl")], "task.file.path: {in}/nowhere.jsonl: no such file"),
    "eval-prompts-invalid-line": (["train", GRPO, *_file_task("typo.jsonl", "task.file.prompt_column=promt",
                                                              "task.file.eval_path={in}/badline.jsonl")],
                                  "task.file.eval_path: {in}/badline.jsonl:2: not valid JSON"),
    # preference files (train-rm)
    "pairs-invalid-json-line": (_pairs_file("pairs_badline.jsonl"),
                                "data.train_path: {in}/pairs_badline.jsonl:2 is not valid JSON"),
    "pairs-missing-field": (_pairs_file("pairs_missing.jsonl"),
                            "pairs_missing.jsonl:1 lacks non-empty text field(s) rejected"),
    "pairs-not-utf8": (_pairs_file("pairs_latin1.jsonl"),
                       "data.train_path: {in}/pairs_latin1.jsonl:1: not UTF-8 text"),
    "pairs-empty-file": (_pairs_file("pairs_empty.jsonl"),
                         "pairs_empty.jsonl holds no preference pairs"),
    "pairs-row-is-a-list": (_pairs_file("pairs_list.jsonl"),
                            "pairs_list.jsonl:1 is not a JSON object with prompt, chosen, rejected"),
    "pairs-blank-chosen": (_pairs_file("pairs_blank.jsonl"),
                           "pairs_blank.jsonl:1 lacks non-empty text field(s) chosen"),
    "rm-nan-lr": (["train-rm", RM, "lr=.nan"], "lr: Input should be a finite number"),
    "rm-output-under-a-file": (["train-rm", RM, "output_dir={in}/afile/rm"], "output_dir: {in}/afile/rm cannot be created"),
    # conversation files (sft)
    "sft-no-assistant-turn": (_sft_file("sft_noassistant.jsonl"),
                              "data.sources.0.path: {in}/sft_noassistant.jsonl:2: messages have no assistant turn"),
    "sft-unknown-role": (_sft_file("sft_role.jsonl"),
                         "sft_role.jsonl:1: messages[0].role must be one of system, user, assistant, got 'human'"),
    "sft-no-response": (_sft_file("sft_noresponse.jsonl"), "data.sources.0.path: {in}/sft_noresponse.jsonl:2: has no response"),
    # serve-reward settings
    "serve-unknown-reward": (["serve-reward", "nope", "--no-auth"], "reward: unknown reward 'nope'"),
    "serve-repeated-key": (["serve-reward", "{in}/serve_dup.yaml", "--no-auth"], "{in}/serve_dup.yaml: line 3 repeats the key 'port'"),
}


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, content in FILES.items():
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    names = {"in": str(folder), "ckpt_none": str(folder / "ckpt_none")}
    (folder / "ckpt_none").mkdir()
    names["ckpt_garbage"] = _checkpoint(folder / "g", "{this is not json")
    for kind in ("empty", "garbage_config", "no_model_type", "no_tokenizer"):
        names[f"model_{kind}"] = _model_dir(folder, kind)
    return names


def _fill(text: str, names: dict[str, str]) -> str:
    """`text` with each {placeholder} of `names` filled in (other braces are YAML)."""
    for key, value in names.items():
        text = text.replace("{" + key + "}", value)
    return text


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_creates_nothing(case, inputs, tiny_model_path, tmp_path, monkeypatch, capsys):
    import cluster.launch
    import cluster.placement

    def no_ray(*_, **__):
        raise AssertionError("the input reached Ray start-up")

    monkeypatch.setattr(cluster.launch, "start_ray", no_ray)
    monkeypatch.setattr(cluster.placement, "start_ray", no_ray)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    words, expected = CASES[case]
    out = tmp_path / "out"
    command = [_fill(w, inputs) for w in words]
    # the tiny model and a fresh output directory, unless the case sets its own
    defaults = {"train": {"model.path": tiny_model_path, "train.output_dir": out},
                "train-rm": {"model.path": tiny_model_path, "output_dir": out},
                "sft": {"model.path": tiny_model_path, "output_dir": out}}.get(command[0], {})
    given = {w.split("=")[0] for w in command}
    command += [f"{key}={value}" for key, value in defaults.items() if key not in given]
    before = _snapshot(tmp_path)

    code = main(command)

    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("rewardflow: error: "), err
    assert _fill(expected, inputs) in lines[0]
    assert not out.exists() and _snapshot(tmp_path) == before


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
