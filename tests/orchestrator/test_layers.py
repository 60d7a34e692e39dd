"""The pipeline is a layer below its executors: no module under orchestrator/pipeline/ imports orchestrator.on_ray,
at its top or inside a function, so Ray's side depends on the pipeline and never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[2] / "orchestrator" / "pipeline"
FORBIDDEN = "orchestrator.on_ray"


def imported_modules(tree: ast.AST) -> list[str]:
    """Every module an `import` or `from ... import` anywhere in the tree names (functions' bodies included)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


def test_no_pipeline_module_imports_on_ray() -> None:
    modules = sorted(PIPELINE.rglob("*.py"))
    assert len(modules) > 20  # the whole package was read, not an empty folder
    offenders = [f"{path.relative_to(PIPELINE)}: {name}" for path in modules
                 for name in imported_modules(ast.parse(path.read_text(), str(path)))
                 if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")]
    assert offenders == []


def test_an_import_inside_a_function_is_seen() -> None:
    tree = ast.parse("def f():\n    from orchestrator.on_ray.replicas import ray_workers\n")
    assert "orchestrator.on_ray.replicas" in imported_modules(tree)
