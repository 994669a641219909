import pytest

from tests.helpers import offline_tiny_model


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    """A tiny Llama with the in-process tokenizer: the smoke tier only needs a local model
    directory (the CLI checks recipes against it), never the default model's download."""
    return str(offline_tiny_model(tmp_path_factory.mktemp("tiny-models")))
