"""Read `model_download.yaml`: every model a project may run, and so every weight set it needs.

    models:
      - class: models.transnetv2.TransNetV2ShotDetector      # or path/to/file.py:Class
        params: {threshold: 0.5}                             # constructor arguments
        revisions: {org/repo: v1.0}                          # optional: pin a weights name's revision
        env: video_splitting                                 # optional: the env to describe it in

Loading never imports a model here: each entry is described by a child process inside its env
(`orchestrator.describe`), so a module that imports torch at its top loads as well as a guarded one.
Every error names the file and the line of the entry at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.declarations import ModelDeclarations
from orchestrator.describe import DescribeError, DescribeFailure, DescribeRequest, describe_in_envs, env_names
from orchestrator.envs import Env, EnvRegistry
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.model_source import absolute_class_path
from orchestrator.weights.requirements import WeightsRequirement, merge_requirements, requirements_of
from orchestrator.yaml_errors import describe_yaml_error

DEFAULT_CONFIG = Path("model_download.yaml")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_path: str = Field(alias="class", min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    revisions: dict[str, str] = Field(default_factory=dict)
    env: str | None = Field(None, min_length=1)
    """Needed only when the class's env cannot be read from its source and its module does not import
    in the orchestrator's environment (an unguarded `import torch` with a computed `conda_env_name`)."""


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[_Entry]


@dataclass(frozen=True)
class ConfiguredModel:
    """One loaded entry: the class path as written, what the model declares, and the weights it needs."""

    class_path: str
    declarations: ModelDeclarations
    requirements: tuple[WeightsRequirement, ...]

    @property
    def label(self) -> str:
        return self.declarations.label

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


def load_download_config(path: Path, registry: EnvRegistry | None = None) -> DownloadConfig:
    """Parse, validate and describe each model in its env (built if needed); raises ConfigError naming
    `path` and the line at fault."""
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
    wheres = [f"{path}: line {_line_of(root, ('models', index, 'class'))}" for index in range(len(parsed.models))]
    try:
        models = _describe_entries(parsed.models, wheres, path.parent.resolve(), registry or EnvRegistry())
    except DescribeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    config = DownloadConfig(path, models)
    config.requirements()  # two entries pinning one name to different revisions fail here, not mid-download
    return config


def _describe_entries(entries: Sequence[_Entry], wheres: Sequence[str], folder: Path,
                      registry: EnvRegistry) -> tuple[ConfiguredModel, ...]:
    """Find each entry's env, build or find the envs, describe each entry inside its env."""
    requests = [DescribeRequest(absolute_class_path(e.class_path, folder), e.params, e.env) for e in entries]
    search = (folder,)
    names: list[str] = []
    for where, request, name in zip(wheres, requests, env_names(requests, search), strict=True):
        if isinstance(name, DescribeFailure):
            raise ConfigError(f"{where}: {name.explain(request, search)}")
        names.append(name)
    envs: dict[str, Env] = {}
    for where, request, name in zip(wheres, requests, names, strict=True):
        if name not in envs:
            try:
                envs[name] = registry.ensure(name)
            except OrchestratorError as exc:
                raise ConfigError(f"{where}: model {request.class_path!r} runs in env {name!r}: {exc}") from None
    described = describe_in_envs([(r, envs[n]) for r, n in zip(requests, names, strict=True)], search)
    return tuple(_configured(where, entry, request, name, outcome, search) for where, entry, request, name,
                 outcome in zip(wheres, entries, requests, names, described, strict=True))


def _configured(where: str, entry: _Entry, request: DescribeRequest, env: str,
                outcome: ModelDeclarations | DescribeFailure, search: Sequence[Path]) -> ConfiguredModel:
    if isinstance(outcome, DescribeFailure):
        raise ConfigError(f"{where}: {outcome.explain(request, search)}")
    if outcome.conda_env_name != env:
        named = "the entry's `env:`" if entry.env else "its source"
        raise ConfigError(f"{where}: model {entry.class_path!r} declares conda_env_name {outcome.conda_env_name!r} "
                          f"but {named} says {env!r}: make them agree")
    try:
        requirements = requirements_of(outcome, entry.revisions)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return ConfiguredModel(entry.class_path, outcome, tuple(requirements))


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
