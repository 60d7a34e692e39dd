"""Envs from a pixi workspace: `envs/<name>/pixi.toml` + `pixi.lock`, built from the lock with rattler.

The pixi environment used is the one named like the env folder when the lock has it, else `default`, so
several orchestrator envs can point (by symlink) at one multi-environment workspace. Conda packages install
exactly as a conda-lock.yml's do (each archive checked against its sha256); PyPI packages are installed by
uv from their locked URLs, each with its locked sha256. Locking stays pixi's job (`pixi lock`).
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path

import rattler

from orchestrator.errors import LockError

PIXI_MANIFEST = "pixi.toml"
PIXI_LOCK = "pixi.lock"


@dataclass(frozen=True)
class PixiEnvironment:
    """One locked pixi environment for one platform."""

    name: str
    channels: tuple[str, ...]
    conda: tuple[dict, ...]
    pypi: tuple[tuple[str, str, str], ...]
    """(name, location, sha256) of each PyPI package."""

    @property
    def python_version(self) -> str:
        found = [r["version"] for r in self.conda if r["name"] == "python"]
        return ".".join(found[0].split(".")[:2]) if found else "?"


def read_pixi_lock(path: Path, env_name: str, platform: str) -> PixiEnvironment:
    """The environment `env_name` (else `default`) of the pixi lock at `path`, for `platform`."""
    fix = f"run `pixi lock` in {path.parent}"
    try:
        lock = rattler.LockFile.from_path(path)
    except Exception as exc:  # rattler raises its own exception types
        raise LockError(f"env {env_name!r}: {path} is not a pixi lock rattler can read ({exc}); {fix}") from None
    try:
        names = [name for name, _ in lock.environments()]
        chosen = env_name if env_name in names else "default"
        environment = lock.environment(chosen)
        owned = next((p for p in lock.platforms() if p.name == platform), None)
        if environment is None or owned is None:
            raise LockError(f"env {env_name!r}: {path} has no environment {env_name!r} or 'default' for {platform} "
                            f"(it has {', '.join(names) or 'none'}); {fix}")
        conda = tuple(json.loads(r.to_json()) for r in environment.conda_repodata_records_for_platform(owned) or [])
        pypi = tuple(_pypi(env_name, p, path) for p in environment.pypi_packages_for_platform(owned) or [])
        channels = tuple(str(c) for c in environment.channels())
        return PixiEnvironment(chosen, channels, conda, pypi)
    finally:
        del lock
        gc.collect()


def _pypi(env_name: str, package: rattler.PypiLockedPackage, path: Path) -> tuple[str, str, str]:
    sha256 = package.hashes.sha256 if package.hashes else None
    if not sha256:
        raise LockError(f"env {env_name!r}: PyPI package {package.name!r} in {path} has no sha256; lock it again "
                        f"with `pixi lock` so every file is checked")
    return package.name, package.location, sha256.hex()


def pypi_requirements(environment: PixiEnvironment) -> str:
    """A hash-pinned requirements file installing the environment's PyPI packages from their locked URLs."""
    return "".join(f"{name} @ {location} --hash=sha256:{sha256}\n" for name, location, sha256 in environment.pypi)
