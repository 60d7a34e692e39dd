"""Env backends: a slow, cached `ensure(spec) -> Env`, and a pure description of how to launch into it.

Three implementations: `uv` (venv + hash-pinned sync), `conda` (conda-lock install), and
`existing` (an interpreter someone else built: containers, clusters). Only `uv` and `conda`
envs live in the cache; an existing interpreter is never touched.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from models.conda_utils import WORKER_ENV_VAR
from orchestrator.envs.cache import EnvCache
from orchestrator.envs.interpreters import find_interpreter, probe_interpreter
from orchestrator.envs.locking import check_uv_lock
from orchestrator.envs.spec import EnvSpec
from orchestrator.envs.tools import conda_executable, conda_lock_executable, run_tool, uv_executable
from orchestrator.errors import EnvBuildError, EnvSpecError, LockError

_DROPPED_VARIABLES = (
    "PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "__PYVENV_LAUNCHER__",
)


@dataclass(frozen=True)
class Env:
    """A ready environment: which interpreter to exec and which variables activation sets."""

    name: str
    backend: str
    prefix: Path
    python: Path
    activation: Mapping[str, str] = field(default_factory=dict)

    def launch_environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment a worker process starts with: `base` minus the parent's interpreter
        settings, plus this env's activation and its name (what `is_running_in_env` reads)."""
        environ = {k: v for k, v in base.items() if k not in _DROPPED_VARIABLES}
        environ.update(self.activation)
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
                f"installed by the uv backend; move them under 'pip:' or use ORCHESTRATOR_ENV_BACKEND=conda"
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
            argv = [uv, "pip", "sync", "--quiet", "--require-hashes", "--python", str(work / "bin" / "python"),
                    str(spec.uv_lock)]
            for link in self.find_links:
                argv += ["--find-links", link]
            run_tool(argv, what)
            return {"backend": self.name, "python_version": interpreter.version}

        entry = self.cache.ensure(spec.name, self.cache_key(spec), build, relocatable=True)
        return self._env(spec, entry.directory)

    def _env(self, spec: EnvSpec, directory: Path) -> Env:
        return Env(spec.name, self.name, directory, directory / "bin" / "python")


class CondaBackend(EnvBackend):
    """`conda-lock install` into the cache; activation is captured once so workers exec python directly."""

    name = "conda"

    def __init__(self, cache: EnvCache) -> None:
        self.cache = cache

    @staticmethod
    def available() -> bool:
        return conda_executable() is not None and conda_lock_executable() is not None

    def cache_key(self, spec: EnvSpec) -> str:
        if not spec.conda_lock.is_file():
            raise LockError(
                f"env {spec.name!r}: {spec.conda_lock} is missing; run `orchestrator envs lock {spec.name}`"
            )
        # Conda prefixes embed their own path, so the location is part of what the entry is.
        return _hash(self.name, spec.conda_lock.read_bytes(), str(self.cache.root), os.uname().machine)

    def built(self, spec: EnvSpec) -> Env | None:
        entry = self.cache.lookup(spec.name, self.cache_key(spec))
        return self._env(spec, entry.directory, entry.metadata) if entry else None

    def ensure(self, spec: EnvSpec) -> Env:
        conda, conda_lock = conda_executable(), conda_lock_executable()
        if conda is None or conda_lock is None:
            raise EnvBuildError(f"env {spec.name!r}: the conda backend needs conda-lock and micromamba/mamba/conda")

        def build(prefix: Path) -> dict[str, Any]:
            flavour = Path(conda).name if Path(conda).name in ("micromamba", "mamba") else "conda"
            run_tool([conda_lock, "install", f"--{flavour}", conda, "--prefix", str(prefix), str(spec.conda_lock)],
                     f"building env {spec.name!r}")
            return {"backend": self.name, "activation": _capture_activation(conda, prefix)}

        entry = self.cache.ensure(spec.name, self.cache_key(spec), build, relocatable=False)
        return self._env(spec, entry.directory, entry.metadata)

    def _env(self, spec: EnvSpec, prefix: Path, metadata: Mapping[str, Any]) -> Env:
        return Env(spec.name, self.name, prefix, prefix / "bin" / "python", dict(metadata.get("activation", {})))


def _capture_activation(conda: str, prefix: Path) -> dict[str, str]:
    """What activating the prefix changes (PATH, LD_LIBRARY_PATH, activate.d exports), captured once."""
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    out = run_tool([conda, "run", "--prefix", str(prefix), "python", "-c", dump], f"activating {prefix}")
    activated = json.loads(out.strip().splitlines()[-1])
    return {k: v for k, v in activated.items() if os.environ.get(k) != v and not k.startswith("CONDA_")}


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
