"""Read `model_download.yaml`: every model a project may run, and so every weight set it needs.

    models:
      - class: models.transnetv2.TransNetV2ShotDetector      # or path/to/file.py:Class
        params: {threshold: 0.5}                             # constructor arguments
        revisions: {org/repo: v1.0}                          # optional: pin a weights name's revision

Loading instantiates each class (never `setup()`), so the guarded imports keep torch and friends
out of this process. Every error names the file and the line of the entry at fault.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.model_interface import ModelInterface
from orchestrator.errors import ConfigError
from orchestrator.weights.requirements import WeightsRequirement, merge_requirements, requirements_of
from orchestrator.yaml_errors import describe_yaml_error
from workers.model_loader import ModelLoadError, instantiate

DEFAULT_CONFIG = Path("model_download.yaml")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_path: str = Field(alias="class", min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    revisions: dict[str, str] = Field(default_factory=dict)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[_Entry]


@dataclass(frozen=True)
class ConfiguredModel:
    """One loaded entry: the class path as written, the instance, and the weights it needs."""

    class_path: str
    model: ModelInterface
    requirements: tuple[WeightsRequirement, ...]

    @property
    def label(self) -> str:
        return type(self.model).__name__

    def matches(self, token: str) -> bool:
        """`--models` accepts a weights name, the class path as written, or the class name."""
        return token in (self.class_path, self.label) or any(r.name == token for r in self.requirements)


@dataclass(frozen=True)
class DownloadConfig:
    path: Path
    models: tuple[ConfiguredModel, ...]

    def requirements(self) -> list[WeightsRequirement]:
        """One requirement per weights name, merged over every model that needs it."""
        try:
            return merge_requirements(r for m in self.models for r in m.requirements)
        except ConfigError as exc:
            raise ConfigError(f"{self.path}: {exc}") from None


def load_download_config(path: Path) -> DownloadConfig:
    """Parse, validate and instantiate; raises ConfigError naming `path` and the line at fault."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read download config {path}: {exc.strerror}; pass --config PATH") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(describe_yaml_error(path, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'models' list, like `models: [{{class: ...}}]`")
    try:
        parsed = _File.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error["loc"]
        raise ConfigError(f"{path}: line {_line_of(root, loc)}: field '{_dotted(loc)}': {error['msg']}") from None
    with _importable_from(path.parent):
        models = tuple(_load_entry(path, root, index, entry) for index, entry in enumerate(parsed.models))
    config = DownloadConfig(path, models)
    config.requirements()  # two entries pinning one name to different revisions fail here, not mid-download
    return config


def _load_entry(path: Path, root: yaml.Node | None, index: int, entry: _Entry) -> ConfiguredModel:
    where = f"{path}: line {_line_of(root, ('models', index, 'class'))}"
    try:
        model = instantiate(_resolve_class_path(entry.class_path, path.parent), entry.params)
    except ModelLoadError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except Exception as exc:  # a module body or a constructor checking its params raises whatever it likes
        raise ConfigError(f"{where}: model {entry.class_path!r} failed to import or to accept params "
                          f"{entry.params}: {type(exc).__name__}: {exc}") from None
    try:
        requirements = requirements_of(model, entry.revisions)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return ConfiguredModel(entry.class_path, model, tuple(requirements))


def _resolve_class_path(class_path: str, base: Path) -> str:
    """`file.py:Class` paths are relative to the config's folder, like `module.Class` imports."""
    if ":" not in class_path:
        return class_path
    file_name, _, class_name = class_path.rpartition(":")
    return f"{(base / file_name).resolve()}:{class_name}"


@contextlib.contextmanager
def _importable_from(folder: Path) -> Iterator[None]:
    entry = str(folder.resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            sys.path.remove(entry)


def _dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_of(root: yaml.Node | None, loc: Sequence[str | int]) -> int:
    """1-based line of the deepest node along `loc` that exists (a missing key points at its parent)."""
    node, line = root, 1
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        node = _child(node, part)
    return node.start_mark.line + 1 if node is not None else line


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((value for key, value in node.value if key.value == part), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None
