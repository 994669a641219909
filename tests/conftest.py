import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _repo_root_cwd():
    os.chdir(ROOT)


# The cluster tier runs the tiny Llama with the default model's tokenizer (downloaded once into
# the cache). tests/unit/conftest.py and tests/smoke/conftest.py override these two fixtures
# with models built in-process (`core.models.build_tiny_tokenizer`): no network, no model files.


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from core.models import build_tiny_model, cache_dir

    return str(build_tiny_model(cache_dir() / "tiny-llama-test"))


@pytest.fixture(scope="session")
def tokenizer():
    from core.models import ensure_tokenizer, load_tokenizer

    return load_tokenizer(str(ensure_tokenizer()))
