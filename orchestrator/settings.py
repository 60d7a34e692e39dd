"""Every environment-variable override the orchestrator reads, in one place.

(`models.model_utils` reads the weights root itself, because workers cannot import this package;
`supervisor.worker_variables` reads ORCHESTRATOR_WORKER_PASS_ENV from the environment it filters for a worker.)
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CPUS_VAR = "ORCHESTRATOR_CPUS"


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _pip_find_links() -> tuple[str, ...]:
    """The find-links pip is configured with, so uv sees the same local wheels (e.g. CPU torch)."""
    from_env = os.environ.get("PIP_FIND_LINKS")
    if from_env:
        return tuple(from_env.split())
    candidates = [Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"), Path.home() / ".config/pip/pip.conf",
                  Path.home() / ".pip/pip.conf"]
    links: list[str] = []
    for path in candidates:
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        for section in ("global", "install"):
            links.extend(parser.get(section, "find-links", fallback="").split())
    return tuple(dict.fromkeys(links))


def _mirrors(value: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in value.split():
        original, _, mirror = item.partition("=")
        if not original or not mirror:
            raise ConfigError(f"ORCHESTRATOR_CONDA_MIRRORS: {item!r} is not URL=MIRROR (e.g. "
                              f"https://conda.anaconda.org/conda-forge=file:///srv/mirror/conda-forge)")
        pairs.append((original.rstrip("/"), mirror.rstrip("/")))
    return tuple(pairs)


def declared_cpus() -> int | None:
    """The cores a run may use, when `ORCHESTRATOR_CPUS` declares them: a container's CPU quota (which the
    process's CPU affinity does not show), fewer to leave cores to other work, or more when workers mostly
    wait (on a GPU or a remote service). None when unset."""
    value = os.environ.get(CPUS_VAR, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{CPUS_VAR}={value!r}: give the number of cores a run may use, a whole number of at "
                          f"least 1, or unset it to use the cores this process may run on")
    return int(value)


@dataclass(frozen=True)
class Settings:
    """Where environments are declared and cached, and how they are built."""

    envs_dir: Path = PROJECT_ROOT / "envs"
    """Folder of environment declarations (`ORCHESTRATOR_ENVS_DIR`)."""
    env_cache_dir: Path = field(default_factory=lambda: cache_home() / "orchestrator" / "envs")
    """Where built environments live (`ORCHESTRATOR_ENV_CACHE`)."""
    backend: str | None = None
    """Force one backend for every env: uv, conda or existing (`ORCHESTRATOR_ENV_BACKEND`)."""
    find_links: tuple[str, ...] = ()
    """Local wheel folders handed to uv (`ORCHESTRATOR_FIND_LINKS`, default: pip's find-links)."""
    existing_pythons: dict[str, Path] = field(default_factory=dict)
    """Pre-built interpreters per env (`ORCHESTRATOR_ENV_PYTHON_<NAME>`)."""
    conda_channel_alias: str = "https://conda.anaconda.org"
    """Where a channel given by name lives (`ORCHESTRATOR_CONDA_CHANNEL_ALIAS`)."""
    conda_mirrors: tuple[tuple[str, str], ...] = ()
    """Channel URL prefixes fetched from elsewhere, for air-gapped sites (`ORCHESTRATOR_CONDA_MIRRORS`:
    `URL=MIRROR` pairs separated by spaces)."""
    conda_cache: Path = field(default_factory=lambda: cache_home() / "orchestrator" / "conda")
    """Conda downloads (`ORCHESTRATOR_CONDA_CACHE`): checked package archives in archives/ (what it holds
    builds without network), rattler's extracted packages in pkgs/ and channel indexes in repodata/."""

    @classmethod
    def from_environ(cls) -> Settings:
        env = os.environ
        existing = {
            key.removeprefix("ORCHESTRATOR_ENV_PYTHON_").lower(): Path(value)
            for key, value in env.items()
            if key.startswith("ORCHESTRATOR_ENV_PYTHON_") and value
        }
        find_links = env.get("ORCHESTRATOR_FIND_LINKS")
        return cls(
            envs_dir=Path(env.get("ORCHESTRATOR_ENVS_DIR") or cls.envs_dir),
            env_cache_dir=Path(env["ORCHESTRATOR_ENV_CACHE"]) if env.get("ORCHESTRATOR_ENV_CACHE")
            else cache_home() / "orchestrator" / "envs",
            backend=env.get("ORCHESTRATOR_ENV_BACKEND") or None,
            find_links=tuple(find_links.split()) if find_links is not None else _pip_find_links(),
            existing_pythons=existing,
            conda_channel_alias=env.get("ORCHESTRATOR_CONDA_CHANNEL_ALIAS") or cls.conda_channel_alias,
            conda_mirrors=_mirrors(env.get("ORCHESTRATOR_CONDA_MIRRORS", "")),
            conda_cache=Path(env["ORCHESTRATOR_CONDA_CACHE"]) if env.get("ORCHESTRATOR_CONDA_CACHE")
            else cache_home() / "orchestrator" / "conda",
        )
