"""A stage's model checked against the source before anything starts: a class path whose file, module or
class does not exist is a config error naming the closest one that does.

Nothing is imported. Where the source cannot tell, the check says nothing and the model's env decides
when the model is described: a top-level module not found here (the model's env may have it), a module
that is not a package, a module with `import *` or a module-level `__getattr__`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from pathlib import Path

from orchestrator.model_source import locate_source
from orchestrator.pipeline.config.errors import did_you_mean


def class_path_problem(class_path: str, search_dirs: Sequence[Path]) -> str | None:
    """Why `class_path` (`pkg.module.Class`, or `/abs/file.py:Class`) names nothing, or None."""
    located = locate_source(class_path, search_dirs)
    if located is None:
        return _missing_file(class_path) if ":" in class_path else _missing_module(class_path, search_dirs)
    path, class_name = located
    names = _defined_names(path)
    if names is None or class_name in names:
        return None
    return f"{path} defines no {class_name!r}{did_you_mean(class_name, sorted(names))}"


def _missing_file(class_path: str) -> str:
    path = Path(class_path.rpartition(":")[0])
    siblings = sorted(p.name for p in path.parent.glob("*.py")) if path.parent.is_dir() else []
    return f"there is no file {path}{did_you_mean(path.name, siblings)}"


def _missing_module(class_path: str, search_dirs: Sequence[Path]) -> str | None:
    """The deepest package of the path that exists here, and the module it lacks; None when no package does."""
    parts = class_path.split(".")[:-1]
    for depth in range(len(parts) - 1, 0, -1):
        package = ".".join(parts[:depth])
        found = locate_source(f"{package}.__init__", search_dirs)
        if found is None:
            continue
        if found[0].name != "__init__.py":
            return None
        folder = found[0].parent
        modules = sorted({p.stem for p in folder.glob("*.py")} | {p.parent.name for p in folder.glob("*/__init__.py")})
        missing = parts[depth]
        hint = did_you_mean(missing, modules, f"{package}.")
        return f"package {package!r} ({folder}) has no module {missing!r}{hint}"
    return None


def _defined_names(path: Path) -> set[str] | None:
    """The names a module defines or imports at its top level; None when its source cannot say."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    names: set[str] = set()
    for statement in _top_level(tree.body):
        if isinstance(statement, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(statement.name)
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in statement.names):
                return None
            names |= {alias.asname or alias.name.partition(".")[0] for alias in statement.names}
        elif isinstance(statement, (ast.Assign, ast.AnnAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            names |= {node.id for target in targets for node in ast.walk(target) if isinstance(node, ast.Name)}
    return None if "__getattr__" in names else names


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The module's statements, including those under a top-level `if`, `try` or `with`."""
    for statement in body:
        yield statement
        if isinstance(statement, (ast.If, ast.Try, ast.With)):
            handlers = [handler.body for handler in getattr(statement, "handlers", [])]
            for block in (statement.body, getattr(statement, "orelse", []), getattr(statement, "finalbody", []),
                          *handlers):
                yield from _top_level(block)
