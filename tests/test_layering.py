"""Imports point one way along the pipeline (data and envs, models, algorithms, evaluation, training, experiments,
cli): a package never imports one above it."""

import ast
from pathlib import Path

import spinrl

# Lower rank = lower in the pipeline; a module may import its own rank and below.
RANK = {"errors": 0, "spaces": 0, "utils": 1, "data": 2, "envs": 2, "models": 3, "algorithms": 4,
        "evaluation": 5, "training": 6, "experiments": 7, "cli": 8, "__main__": 9}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spinrl."):
            yield node.lineno, node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("spinrl."):
                    yield node.lineno, a.name.split(".")[1]


def test_imports_point_down_the_pipeline():
    root = Path(spinrl.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        src = rel.parts[0].removesuffix(".py")
        if src == "__init__":
            continue
        assert src in RANK, f"{rel}: add its package to RANK in this test"
        for line, dst in _imports(path):
            assert dst in RANK, f"{rel}:{line}: add spinrl.{dst} to RANK in this test"
            if RANK[dst] > RANK[src]:
                bad.append(f"{rel}:{line} imports spinrl.{dst}")
    assert not bad, "imports against the pipeline direction:\n" + "\n".join(bad)
