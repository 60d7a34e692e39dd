"""Read a model's env name from its source text, without importing it.

    class_path ──locate──▶ file ──ast──▶ class (or a base class in the same file) ──▶ conda_env_name
                                                                                       literal str | None

Most models name their env as a literal (`return "video_splitting"`), so reading the file is enough
to know where to run it, even when its module imports torch at the top and cannot be imported here.
Anything not literal gives None, and the caller asks a child process instead.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
from collections.abc import Sequence
from pathlib import Path

ENV_ATTRIBUTE = "conda_env_name"


def absolute_class_path(class_path: str, base: Path) -> str:
    """`file.py:Class` paths are relative to the config's folder (made absolute here); `module.Class` paths
    are imported from the config's folder and the current directory, and stay as they are."""
    if ":" not in class_path:
        return class_path
    file_name, _, class_name = class_path.rpartition(":")
    return f"{(base / file_name).resolve()}:{class_name}"


def locate_source(class_path: str, search_dirs: Sequence[Path] = ()) -> tuple[Path, str] | None:
    """The file defining `class_path` and the class name, found the way an import would find them
    (`search_dirs` first, then this process's import path) without running any module; None if absent.

    `path/to/file.py:Class` names its file; `pkg.module.Class` is looked up package by package.
    """
    if ":" in class_path:
        file_name, _, class_name = class_path.rpartition(":")
        path = Path(file_name)
        return (path, class_name) if path.is_file() else None
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name:
        return None
    path = _module_file(module_name.split("."), search_dirs)
    return (path, class_name) if path is not None else None


def _module_file(parts: list[str], search_dirs: Sequence[Path]) -> Path | None:
    top = importlib.machinery.PathFinder.find_spec(parts[0], [str(d) for d in search_dirs])
    if top is None:
        try:  # a top-level lookup consults the finders (editable installs too) but runs no module code
            top = importlib.util.find_spec(parts[0])
        except (ImportError, ValueError):
            return None
    if top is None:
        return None
    locations = list(top.submodule_search_locations or [])
    origin = Path(top.origin) if top.origin and top.has_location else None
    for part in parts[1:]:
        origin = None
        for location in locations:
            candidates = (Path(location) / f"{part}.py", Path(location) / part / "__init__.py")
            origin = next((c for c in candidates if c.is_file()), None)
            if origin is not None:
                locations = [str(origin.parent)] if origin.name == "__init__.py" else []
                break
        if origin is None:
            return None
    return origin if origin is not None and origin.suffix == ".py" else None


def static_env_name(class_path: str, search_dirs: Sequence[Path] = ()) -> str | None:
    """The literal `conda_env_name` of `class_path`'s class, or None when the source does not say.

    Understood: a property or method returning a string (or a module-level string constant), a class
    attribute set to one, `property(lambda self: "...")`, each on the class or on a base class defined
    in the same file.
    """
    located = locate_source(class_path, search_dirs)
    if located is None:
        return None
    path, class_name = located
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    constants = _string_constants(tree)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    return _env_of_class(classes.get(class_name), classes, constants, set())


def _string_constants(tree: ast.Module) -> dict[str, str]:
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        else:
            continue
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            found[target] = value.value
    return found


def _env_of_class(node: ast.ClassDef | None, classes: dict[str, ast.ClassDef], constants: dict[str, str],
                  visited: set[str]) -> str | None:
    """The class's own definition wins; without one, the bases in order (those defined in this file)."""
    if node is None or node.name in visited:
        return None
    visited.add(node.name)
    for statement in node.body:
        defined, value = _definition(statement, constants)
        if defined:
            return value
    for base in node.bases:
        if isinstance(base, ast.Name) and (found := _env_of_class(classes.get(base.id), classes, constants,
                                                                    visited)):
            return found
    return None


def _definition(statement: ast.stmt, constants: dict[str, str]) -> tuple[bool, str | None]:
    """(does `statement` define the env attribute, its literal value or None)."""
    if isinstance(statement, ast.FunctionDef) and statement.name == ENV_ATTRIBUTE:
        body = [s for s in statement.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        single = body[0] if len(body) == 1 and isinstance(body[0], ast.Return) else None
        return True, _literal(single.value, constants) if single is not None else None
    if isinstance(statement, ast.Assign) and any(isinstance(t, ast.Name) and t.id == ENV_ATTRIBUTE
                                                 for t in statement.targets):
        return True, _literal(statement.value, constants)
    if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
            and statement.target.id == ENV_ATTRIBUTE):
        return True, _literal(statement.value, constants)
    return False, None


def _literal(value: ast.expr | None, constants: dict[str, str]) -> str | None:
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value.value
    if isinstance(value, ast.Name):
        return constants.get(value.id)
    is_property = isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "property"
    if is_property and value.args and isinstance(value.args[0], ast.Lambda):
        return _literal(value.args[0].body, constants)
    return None
