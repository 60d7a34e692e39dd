"""Env backends: a slow, cached `ensure(spec) -> Env`, and a pure description of how to launch into it.

Four implementations: `uv` (venv + hash-pinned sync), `conda` (rattler installs a conda-lock file),
`pixi` (rattler installs a pixi workspace's lock) and `existing` (an interpreter someone else built:
containers, clusters). All but `existing` live in the cache; an existing interpreter is never touched.
"""

from __future__ import annotations

import abc
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from models.conda_utils import WORKER_ENV_VAR
from orchestrator.envs import rattler_ops
from orchestrator.envs.cache import EnvCache
from orchestrator.envs.channels import ChannelAccess
from orchestrator.envs.conda_lock_file import locked_records
from orchestrator.envs.interpreters import find_interpreter, probe_interpreter
from orchestrator.envs.locking import channel_access, check_conda_locks, check_uv_lock
from orchestrator.envs.pixi import PixiEnvironment, pypi_requirements, read_pixi_lock
from orchestrator.envs.spec import EnvSpec
from orchestrator.envs.tools import run_tool, uv_executable
from orchestrator.errors import EnvBuildError, EnvSpecError, LockError
from orchestrator.settings import Settings

_DROPPED_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
_DROPPED_PREFIXES = ("CONDA_", "_CE_")


@dataclass(frozen=True)
class Env:
    """A ready environment: which interpreter to exec and which variables activation sets."""

    name: str
    backend: str
    prefix: Path
    python: Path
    activation: Mapping[str, str] = field(default_factory=dict)
    path_prepend: tuple[str, ...] = ()
    """Directories activation puts in front of PATH (a conda env's bin/)."""

    def launch_environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment a worker process starts with: `base` minus the parent's interpreter and conda
        settings, plus this env's activation, its PATH entries and its name (what `is_running_in_env` reads)."""
        environ = {k: v for k, v in base.items()
                   if k not in _DROPPED_VARIABLES and not k.startswith(_DROPPED_PREFIXES)}
        environ.update(self.activation)
        if self.path_prepend:
            environ["PATH"] = os.pathsep.join([*self.path_prepend, base.get("PATH") or os.defpath])
        environ[WORKER_ENV_VAR] = self.name
        return environ


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


class EnvBackend(abc.ABC):
    """How one kind of environment is built and found."""

    name: ClassVar[str]

    @abc.abstractmethod
    def cache_key(self, spec: EnvSpec) -> str | None:
        """Hash naming the env's cache entry; None for envs that are not cached."""

    @abc.abstractmethod
    def ensure(self, spec: EnvSpec) -> Env:
        """Build the env if needed (slow once, then cached) and return it."""

    def built(self, spec: EnvSpec) -> Env | None:
        """The env if it is ready now, without building."""
        return None


class UvBackend(EnvBackend):
    """`uv venv` with the declared interpreter, then `uv pip sync --require-hashes` from the lock."""

    name = "uv"

    def __init__(self, cache: EnvCache, find_links: tuple[str, ...]) -> None:
        self.cache = cache
        self.find_links = find_links

    def cache_key(self, spec: EnvSpec) -> str:
        if spec.conda_packages:
            raise EnvSpecError(
                f"env {spec.name!r}: conda packages {list(spec.conda_packages)} in {spec.spec_file} cannot be "
                f"installed by the uv backend; move them under 'pip:', or unset ORCHESTRATOR_ENV_BACKEND (an env "
                f"with conda packages builds with the conda backend)"
            )
        check_uv_lock(spec)
        interpreter = find_interpreter(spec.python_version, spec.name)
        return _hash(self.name, spec.uv_lock.read_bytes(), interpreter.version, interpreter.platform)

    def built(self, spec: EnvSpec) -> Env | None:
        entry = self.cache.lookup(spec.name, self.cache_key(spec))
        return self._env(spec, entry.directory) if entry else None

    def ensure(self, spec: EnvSpec) -> Env:
        interpreter = find_interpreter(spec.python_version, spec.name)
        uv = uv_executable()

        def build(work: Path) -> dict[str, Any]:
            what = f"building env {spec.name!r}"
            run_tool([uv, "venv", "--quiet", "--relocatable", "--python", str(interpreter.path), str(work)], what)
            run_tool([uv, "pip", "sync", "--quiet", "--require-hashes", "--python", str(work / "bin" / "python"),
                      *_find_links_args(self.find_links), str(spec.uv_lock)], what)
            return {"backend": self.name, "python_version": interpreter.version}

        entry = self.cache.ensure(spec.name, self.cache_key(spec), build, relocatable=True)
        return self._env(spec, entry.directory)

    def _env(self, spec: EnvSpec, directory: Path) -> Env:
        return Env(spec.name, self.name, directory, directory / "bin" / "python")


class CondaBackend(EnvBackend):
    """rattler installs the locked conda packages into the cache, then uv syncs the pip lock into that prefix;
    activation (variables, PATH, activate.d scripts) is computed once and stored with the entry."""

    name = "conda"

    def __init__(self, cache: EnvCache, settings: Settings) -> None:
        self.cache = cache
        self.settings = settings

    def cache_key(self, spec: EnvSpec) -> str:
        check_conda_locks(spec)
        # Conda prefixes embed their own path, so the location is part of what the entry is.
        return _hash(self.name, spec.conda_lock.read_bytes(), spec.uv_lock.read_bytes(), str(self.cache.root),
                     rattler_ops.platform())

    def built(self, spec: EnvSpec) -> Env | None:
        entry = self.cache.lookup(spec.name, self.cache_key(spec))
        return self._env(spec, entry.directory, entry.metadata) if entry else None

    def ensure(self, spec: EnvSpec) -> Env:
        key = self.cache_key(spec)
        records, access = self._locked(spec)

        def build(prefix: Path) -> dict[str, Any]:
            rattler_ops.install(spec.name, records, prefix, access, self.settings.conda_cache)
            python = prefix / "bin" / "python"
            if not python.exists():
                raise EnvBuildError(f"env {spec.name!r}: its conda packages installed no bin/python; add "
                                    f"python to {spec.directory}'s conda dependencies and lock again")
            self._install_pip(spec, python)
            activated = rattler_ops.activation(prefix)
            return {"backend": self.name, "activation": activated.variables,
                    "path_prepend": list(activated.path_prepend)}

        entry = self.cache.ensure(spec.name, key, build, relocatable=False)
        return self._env(spec, entry.directory, entry.metadata)

    def _locked(self, spec: EnvSpec) -> tuple[list[dict], ChannelAccess]:
        """The conda records to install and how to reach their channels."""
        return locked_records(spec.conda_lock, spec.name, rattler_ops.platform()), channel_access(spec, self.settings)

    def _install_pip(self, spec: EnvSpec, python: Path) -> None:
        run_tool([uv_executable(), "pip", "sync", "--quiet", "--require-hashes", "--python", str(python),
                  *_find_links_args(self.settings.find_links), str(spec.uv_lock)],
                 f"installing the pip packages of env {spec.name!r}")

    def _env(self, spec: EnvSpec, prefix: Path, metadata: Mapping[str, Any]) -> Env:
        return Env(spec.name, self.name, prefix, prefix / "bin" / "python", dict(metadata.get("activation", {})),
                   tuple(metadata.get("path_prepend", ())))


class PixiBackend(CondaBackend):
    """A pixi workspace's locked environment (`pixi.lock`), installed like a conda env; PyPI packages by uv
    from their locked URLs and hashes."""

    name = "pixi"

    def cache_key(self, spec: EnvSpec) -> str:
        if not spec.pixi_lock.is_file():
            raise LockError(f"env {spec.name!r}: {spec.pixi_lock} is missing; run `pixi lock` in {spec.directory}")
        return _hash(self.name, spec.pixi_lock.read_bytes(), spec.name, str(self.cache.root), rattler_ops.platform())

    def _environment(self, spec: EnvSpec) -> PixiEnvironment:
        return read_pixi_lock(spec.pixi_lock, spec.name, rattler_ops.platform())

    def _locked(self, spec: EnvSpec) -> tuple[list[dict], ChannelAccess]:
        environment = self._environment(spec)
        access = ChannelAccess.for_env(spec.name, environment.channels, alias=self.settings.conda_channel_alias,
                                       base_dir=spec.directory, mirrors=self.settings.conda_mirrors)
        return list(environment.conda), access

    def _install_pip(self, spec: EnvSpec, python: Path) -> None:
        requirements = pypi_requirements(self._environment(spec))
        if not requirements:
            return
        with tempfile.TemporaryDirectory(prefix="orch-pixi-") as tmp:
            listed = Path(tmp) / "requirements.txt"
            listed.write_text(requirements)
            run_tool([uv_executable(), "pip", "install", "--quiet", "--no-deps", "--require-hashes", "--python",
                      str(python), "-r", str(listed)], f"installing the PyPI packages of env {spec.name!r}")


def _find_links_args(find_links: tuple[str, ...]) -> list[str]:
    return [arg for link in find_links for arg in ("--find-links", link)]


class ExistingBackend(EnvBackend):
    """An interpreter built elsewhere, given by path; checked, never built or deleted."""

    name = "existing"

    def __init__(self, pythons: Mapping[str, Path]) -> None:
        self.pythons = pythons

    def cache_key(self, spec: EnvSpec) -> None:
        return None

    def built(self, spec: EnvSpec) -> Env | None:
        return self.ensure(spec)

    def ensure(self, spec: EnvSpec) -> Env:
        python = self.pythons.get(spec.name.lower())
        variable = f"ORCHESTRATOR_ENV_PYTHON_{spec.name.upper()}"
        if python is None:
            raise EnvSpecError(f"env {spec.name!r} uses the existing backend but {variable} is not set")
        if probe_interpreter(python) is None:
            raise EnvSpecError(f"env {spec.name!r}: {variable}={python} is not a working Python interpreter")
        check = subprocess.run([str(python), "-c", "import sys, zmq, msgpack, numpy; print(sys.prefix)"],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise EnvSpecError(
                f"env {spec.name!r}: {python} lacks what a worker needs (pyzmq, msgpack, numpy): "
                f"`{python} -m pip install pyzmq msgpack numpy`"
            )
        return Env(spec.name, self.name, Path(check.stdout.strip()), python)
