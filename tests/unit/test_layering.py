"""Packages import one way, bottom to top; no file-level import cycle; heavy dependencies stay at
their edge. Every import is scanned, including those inside functions and `TYPE_CHECKING` blocks.

    core < rewards < learners < actors < cluster < apps
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("core", "rewards", "learners", "actors", "cluster", "apps")
# Third-party packages allowed only in these files (anywhere else is a failure).
EDGES = {
    "ray": ("actors/rank.py", "actors/rollout.py", "cluster/", "apps/"),
    "vllm": ("actors/rollout.py", "rewards/judge_backends.py"),
    "deepspeed": ("learners/engine.py", "learners/reward_model.py"),
    "fastapi": ("apps/reward_server.py", "apps/http_guard.py"),
    "uvicorn": ("apps/reward_server.py", "apps/http_guard.py"),
    "h11": ("apps/http_guard.py",),
    "httpx": ("rewards/remote.py",),
    "openai": ("rewards/judge_backends.py",),
    "wandb": ("cluster/metrics.py",),
    "matplotlib": ("apps/plots.py",),
}


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the layered packages under `root`."""
    found = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, at any depth."""
    out = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            # `from pkg import mod` names a module when pkg.mod exists; otherwise an attribute of pkg.
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names] + [(node.lineno, base)]
    return out


def project_edges(root: Path) -> list[tuple[str, int, str]]:
    """(importing module, line, imported project module) for every import between our modules."""
    mods = modules(root)
    edges = []
    for mod, path in mods.items():
        for line, target in imports(path, mod):
            if target in mods and target != mod:
                edges.append((mod, line, target))
    return edges


def layer_of(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def upward_imports(root: Path) -> list[str]:
    """One line per import that reaches a higher layer, naming the file and line."""
    mods = modules(root)
    return [f"{mods[src].relative_to(root)}:{line}: imports {dst} ({dst.split('.')[0]} is above {src.split('.')[0]})"
            for src, line, dst in project_edges(root) if layer_of(dst) > layer_of(src)]


def cycles(root: Path) -> list[list[str]]:
    """Strongly connected components of more than one module in the file-level import graph."""
    graph: dict[str, set[str]] = {m: set() for m in modules(root)}
    for src, _, dst in project_edges(root):
        graph[src].add(dst)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_packages_import_only_downward():
    assert upward_imports(ROOT) == []


def test_no_file_level_import_cycle():
    assert cycles(ROOT) == []


def test_the_checker_catches_an_injected_upward_import_and_cycle(tmp_path):
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "core/ops.py").write_text("import torch\n")
    (tmp_path / "rewards/base.py").write_text("from core.ops import torch\n\n\ndef f():\n    from cluster.loop import run\n")
    (tmp_path / "cluster/loop.py").write_text("from cluster import state\n\n\ndef run():\n    pass\n")
    (tmp_path / "cluster/state.py").write_text("import cluster.loop\n")
    assert upward_imports(tmp_path) == ["rewards/base.py:5: imports cluster.loop (cluster is above rewards)"]
    assert cycles(tmp_path) == [["cluster.loop", "cluster.state"]]


def test_heavy_dependencies_stay_at_their_edge():
    wrong = []
    for mod, path in modules(ROOT).items():
        rel = str(path.relative_to(ROOT))
        for line, target in imports(path, mod):
            allowed = EDGES.get(target.split(".")[0])
            if allowed is not None and not rel.startswith(allowed):
                wrong.append(f"{rel}:{line}: imports {target}")
    assert wrong == []


def test_loading_a_recipe_imports_only_what_it_names():
    code = ("import sys\nfrom cluster.recipe import load_recipe\n"
            "before = {m for m in sys.modules if m.startswith(('rewards.', 'learners.algos.'))}\n"
            "load_recipe('recipes/grpo_arith.yaml')\n"
            "after = {m for m in sys.modules if m.startswith(('rewards.', 'learners.algos.'))}\n"
            "heavy = [m for m in ('ray', 'vllm', 'deepspeed', 'httpx', 'fastapi', 'openai', 'wandb', 'matplotlib')"
            " if m in sys.modules]\n"
            "print(sorted(before), sorted(after - before), heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == ("['learners.algos.registry', 'rewards.base', 'rewards.combine', 'rewards.registry'] "
                           "['learners.algos.base', 'learners.algos.grpo', 'rewards.math_correct'] []")


def test_package_inits_are_empty():
    for init in sorted(ROOT.glob("*/__init__.py")) + sorted(ROOT.glob("*/*/__init__.py")):
        if init.parts[-2] in LAYERS or init.parts[-3] in LAYERS:
            assert init.read_text().strip() == "", init
