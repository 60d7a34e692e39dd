"""The declared environments and which backend serves each: the one entry point the rest uses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.envs import rattler_ops
from orchestrator.envs.backends import CondaBackend, Env, EnvBackend, ExistingBackend, PixiBackend, UvBackend
from orchestrator.envs.cache import EnvCache, directory_size, lease
from orchestrator.envs.locking import check_conda_locks, check_uv_lock
from orchestrator.envs.pixi import read_pixi_lock
from orchestrator.envs.spec import EnvSpec, list_env_names, load_spec, validate_env_name
from orchestrator.errors import EnvBuildError, EnvSpecError, OrchestratorError
from orchestrator.settings import Settings

BACKENDS = ("uv", "conda", "pixi", "existing")


@dataclass(frozen=True)
class EnvStatus:
    """One row of `orchestrator envs list`."""

    name: str
    backend: str
    python: str
    lock_hash: str | None
    built: bool
    path: str | None
    size_bytes: int | None
    problem: str | None = None


class EnvRegistry:
    """Find, build and describe the environments declared under `settings.envs_dir`."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_environ()
        self.cache = EnvCache(self.settings.env_cache_dir)
        self._backends: dict[str, EnvBackend] = {
            "uv": UvBackend(self.cache, self.settings.find_links),
            "conda": CondaBackend(self.cache, self.settings),
            "pixi": PixiBackend(self.cache, self.settings),
            "existing": ExistingBackend(self.settings.existing_pythons),
        }

    def names(self) -> list[str]:
        return list_env_names(self.settings.envs_dir)

    def spec(self, name: str) -> EnvSpec:
        validate_env_name(name)
        if name not in self.names():
            known = ", ".join(self.names()) or "none"
            raise EnvSpecError(
                f"unknown env {name!r}: no {self.settings.envs_dir / name / 'environment.yml'} "
                f"or pixi.lock (known envs: {known})"
            )
        return load_spec(self.settings.envs_dir, name)

    def backend_for(self, spec: EnvSpec) -> EnvBackend:
        """Explicit setting, else an interpreter given for this env, else pixi for a pixi workspace, conda for
        an env with conda packages, uv for the rest."""
        choice = self.settings.backend
        if choice is not None and choice not in BACKENDS:
            raise EnvSpecError(f"ORCHESTRATOR_ENV_BACKEND={choice!r} is not one of {', '.join(BACKENDS)}")
        if choice is None:
            if spec.name.lower() in self.settings.existing_pythons:
                choice = "existing"
            elif spec.is_pixi:
                choice = "pixi"
            elif spec.conda_packages:
                choice = "conda"
            else:
                choice = "uv"
        return self._backends[choice]

    def ensure(self, name: str) -> Env:
        spec = self.spec(name)
        return self.backend_for(spec).ensure(spec)

    def status(self, name: str) -> EnvStatus:
        spec = self.spec(name)
        backend = self.backend_for(spec)
        try:
            env = backend.built(spec)
            key = backend.cache_key(spec)
        except OrchestratorError as exc:
            return EnvStatus(name, backend.name, spec.python_version, None, False, None, None, str(exc))
        size = directory_size(env.prefix) if env and backend.name != "existing" else None
        return EnvStatus(name, backend.name, spec.python_version, key[:16] if key else None, env is not None,
                         str(env.prefix) if env else None, size)

    def check(self) -> list[str]:
        """Problems with the declared specs and their locks (empty when all is well)."""
        problems = []
        for name in self.names():
            try:
                spec = self.spec(name)
                backend = self.backend_for(spec).name
                if backend == "uv":
                    check_uv_lock(spec)
                elif backend == "conda":
                    check_conda_locks(spec)
                elif backend == "pixi":
                    read_pixi_lock(spec.pixi_lock, spec.name, rattler_ops.platform())
            except OrchestratorError as exc:
                problems.append(str(exc))
        return problems

    def current_entries(self) -> set[Path]:
        keep = set()
        for name in self.names():
            try:
                spec = self.spec(name)
                key = self.backend_for(spec).cache_key(spec)
            except OrchestratorError:
                continue
            if key:
                keep.add(self.cache.entry_dir(name, key))
        return keep

    def leased(self, envs: Iterable[Env]) -> contextlib.ExitStack:
        """Mark each cached env in `envs` as in use until the returned stack closes (`with registry.leased(...)`):
        `orchestrator envs gc`, in any process, then leaves it alone even if its spec changed meanwhile.
        Envs outside the cache (the `existing` backend) are never collected and need no lease."""
        with contextlib.ExitStack() as stack:
            for env in envs:
                if env.prefix.parent != self.cache.root:
                    continue
                try:
                    stack.enter_context(lease(env.prefix))
                except FileNotFoundError:
                    raise EnvBuildError(f"env {env.name!r} at {env.prefix} was removed (by `orchestrator envs gc`?) "
                                        f"before it could be marked in use; run again to rebuild it") from None
            return stack.pop_all()

    def gc(self) -> list[Path]:
        """Remove cache entries no declared env would use now and no process is using."""
        return self.cache.gc(self.current_entries())
