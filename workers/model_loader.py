"""Import a model class named in a config and instantiate it, with errors that say what to fix."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from models.model_interface import ModelInterface


class ModelLoadError(Exception):
    """The class path does not import, is not a ModelInterface, or rejected its params."""


def import_model_class(class_path: str) -> type[ModelInterface]:
    """`package.module.Class` (importable from PYTHONPATH) or `path/to/file.py:Class`."""
    if ":" in class_path:
        file_name, _, class_name = class_path.rpartition(":")
        module = _import_file(Path(file_name))
    else:
        module_name, _, class_name = class_path.rpartition(".")
        if not module_name:
            raise ModelLoadError(f"model {class_path!r} must be 'module.Class' or 'path/to/file.py:Class'")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModelLoadError(f"model {class_path!r}: module {module_name!r} does not import: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ModelLoadError(f"model {class_path!r}: {module.__name__!r} has no attribute {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, ModelInterface)):
        raise ModelLoadError(f"model {class_path!r} is not a subclass of models.ModelInterface")
    return cls


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist")
    module_name = f"user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"model file {str(path)!r} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise ModelLoadError(f"model file {str(path)!r} does not import: {exc}") from exc
    return module


def instantiate(class_path: str, params: dict[str, Any]) -> ModelInterface:
    cls = import_model_class(class_path)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ModelLoadError(f"model {class_path!r} rejected params {sorted(params)}: {exc}") from exc
