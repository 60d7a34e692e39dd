"""Read `envs/<name>/environment.yml`, the single source of truth for one environment."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import EnvSpecError
from orchestrator.yaml_errors import describe_yaml_error

SPEC_FILE = "environment.yml"
UV_LOCK_FILE = "requirements.lock"
CONDA_LOCK_FILE = "conda-lock.yml"
PIXI_LOCK_FILE = "pixi.lock"
WORKER_REQUIREMENTS = ("pyzmq>=25", "msgpack>=1.0", "numpy")
"""What every worker imports; added to an env's lock unless its spec already names them."""

_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PYTHON_PIN = re.compile(r"^python\s*=+\s*(\d+\.\d+)(\.\d+)?(\.\*)?$")
_SUBDIR = re.compile(r"^(linux|osx|win|emscripten|wasi|zos|freebsd)-[a-z0-9_]+$")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def validate_env_name(name: str) -> str:
    """Refuse names that could escape `envs/` or the cache (`../x`, `a/b`)."""
    if not _ENV_NAME.match(name) or ".." in name:
        raise EnvSpecError(
            f"env name {name!r} is invalid: use letters, digits, '_', '-' or '.', with no path separators"
        )
    return name


def requirement_name(requirement: str) -> str:
    """Normalised distribution name of a requirement line (`Foo_Bar>=1` -> `foo-bar`)."""
    match = _REQ_NAME.match(requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else requirement.lower()


@dataclass(frozen=True)
class EnvSpec:
    """One environment as declared: interpreter version, conda packages, pip requirements."""

    name: str
    directory: Path
    python_version: str
    pip_requirements: tuple[str, ...]
    conda_packages: tuple[str, ...]
    channels: tuple[str, ...]
    platforms: tuple[str, ...] = ()
    """Conda subdirs to lock for (`platforms:`, as conda-lock reads it); empty: this machine's."""
    is_pixi: bool = False
    """A pixi workspace (pixi.toml + pixi.lock, no environment.yml): everything it holds comes from its lock."""

    @property
    def spec_file(self) -> Path:
        return self.directory / SPEC_FILE

    @property
    def uv_lock(self) -> Path:
        return self.directory / UV_LOCK_FILE

    @property
    def conda_lock(self) -> Path:
        return self.directory / CONDA_LOCK_FILE

    @property
    def pixi_lock(self) -> Path:
        return self.directory / PIXI_LOCK_FILE

    def lock_requirements(self) -> list[str]:
        """The pip requirements to lock: the declared ones plus what a worker needs."""
        named = {requirement_name(r) for r in self.pip_requirements}
        extra = [r for r in WORKER_REQUIREMENTS if requirement_name(r) not in named]
        return [*self.pip_requirements, *extra]

    def conda_specs(self) -> list[str]:
        """What a conda env solves for: the interpreter as a conda package, then the declared packages."""
        return [f"python {self.python_version}.*", *self.conda_packages]

    def content_hash(self) -> str:
        """Hash of what the lock depends on; a lock records it so `envs check` spots drift."""
        content = {"python": self.python_version, "pip": self.lock_requirements(),
                   "conda": list(self.conda_packages), "channels": list(self.channels)}
        if self.platforms:
            content["platforms"] = list(self.platforms)
        canonical = json.dumps(content, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def load_spec(envs_dir: Path, name: str) -> EnvSpec:
    """Parse and validate one environment declaration; errors name the file and field."""
    validate_env_name(name)
    path = envs_dir / name / SPEC_FILE
    if not path.is_file() and (envs_dir / name / PIXI_LOCK_FILE).is_file():
        return EnvSpec(name, envs_dir / name, "-", (), (), (), is_pixi=True)
    if not path.is_file():
        raise EnvSpecError(f"{path}: not found; create it (see envs/video_splitting/{SPEC_FILE} for the shape)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise EnvSpecError(describe_yaml_error(path, exc)) from None
    if not isinstance(data, dict):
        raise EnvSpecError(f"{path}: expected a mapping with a 'dependencies' list")
    return _spec_from_mapping(path, name, data)


def _spec_from_mapping(path: Path, name: str, data: dict[str, Any]) -> EnvSpec:
    declared_name = data.get("name", name)
    if declared_name != name:
        raise EnvSpecError(f"{path}: field 'name' is {declared_name!r} but the folder is {name!r}; make them match")
    deps = data.get("dependencies")
    if not isinstance(deps, list):
        raise EnvSpecError(f"{path}: field 'dependencies' must be a list (python=X.Y, pip, and a pip: list)")
    channels = _strings(path, data, "channels", "a list of channel names or URLs", re.compile(r"\S"))
    platforms = _strings(path, data, "platforms", "a list of conda subdirs, e.g. [linux-64, osx-arm64]", _SUBDIR)
    python, pip_reqs, conda = None, [], []
    for index, dep in enumerate(deps):
        field_name = f"dependencies[{index}]"
        if isinstance(dep, dict):
            if set(dep) != {"pip"} or not isinstance(dep["pip"], list):
                raise EnvSpecError(f"{path}: field '{field_name}' must be 'pip:' followed by a list of requirements")
            pip_reqs.extend(_pip_requirements(path, field_name, dep["pip"]))
        elif isinstance(dep, str) and (match := _PYTHON_PIN.match(dep.strip())):
            python = match.group(1)
        elif isinstance(dep, str) and dep.strip() == "python":
            raise EnvSpecError(f"{path}: field '{field_name}' must pin a version, e.g. 'python=3.11'")
        elif isinstance(dep, str) and dep.strip():
            if dep.strip() != "pip":
                conda.append(dep.strip())
        else:
            raise EnvSpecError(f"{path}: field '{field_name}' must be a package string or a 'pip:' list")
    if python is None:
        raise EnvSpecError(f"{path}: field 'dependencies' needs the interpreter version, e.g. '- python=3.11'")
    return EnvSpec(name, path.parent, python, tuple(pip_reqs), tuple(conda), tuple(channels), tuple(platforms))


def _strings(path: Path, data: dict[str, Any], field_name: str, shape: str, pattern: re.Pattern[str]) -> list[str]:
    values = data.get(field_name, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and pattern.match(v) for v in values):
        raise EnvSpecError(f"{path}: field '{field_name}' must be {shape}")
    return values


def _pip_requirements(path: Path, field_name: str, entries: list[Any]) -> list[str]:
    reqs = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry.strip():
            raise EnvSpecError(f"{path}: field '{field_name}.pip[{index}]' must be a requirement string")
        reqs.append(entry.strip())
    return reqs


def list_env_names(envs_dir: Path) -> list[str]:
    """Names of the declared environments (folders holding an environment.yml or a pixi.lock)."""
    if not envs_dir.is_dir():
        return []
    return sorted({p.parent.name for pattern in (SPEC_FILE, PIXI_LOCK_FILE) for p in envs_dir.glob(f"*/{pattern}")})
