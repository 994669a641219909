"""Math and reward modules import no Ray, vLLM or DeepSpeed; package __init__s stay empty."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"ray", "vllm", "deepspeed"}
LIGHT = [
    *sorted((ROOT / "learners").glob("ops.py")),
    ROOT / "learners/advantages.py", ROOT / "learners/losses.py", ROOT / "learners/mixture.py",
    ROOT / "learners/sampling.py",
    *sorted((ROOT / "learners/algos").glob("*.py")),
    *sorted((ROOT / "rewards").glob("*.py")),
    ROOT / "cluster/config.py", ROOT / "cluster/protocol.py", ROOT / "cluster/data.py",
]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", LIGHT, ids=lambda p: str(p.relative_to(ROOT)))
def test_light_modules_import_nothing_heavy(path):
    assert not _imports(path) & HEAVY


def test_package_inits_are_empty():
    for pkg in ("cluster", "actors", "learners", "learners/algos", "rewards"):
        assert (ROOT / pkg / "__init__.py").read_text().strip() == "", pkg
