"""Conda channels as declared, as locked and as fetched: names, mirrors and credentials.

    declared (environment.yml)      conda-forge | https://${USER}:${PASS}@host/ch | file:///srv/ch | ./local
         │ names get the channel alias, paths become file:// URLs
    canonical (conda-lock.yml)      https://conda.anaconda.org/conda-forge   (credentials stay ${VAR}s)
         │ ${VAR}s expanded from the environment, then the mirror mapping applied
    fetched (this machine)          file:///mirror/conda-forge

The lock holds canonical URLs only, so one lock serves a connected machine and an air-gapped mirror alike,
and a token never lands in a file (conda-lock's `used_env_vars` convention).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import EnvSpecError

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def canonical_channel(channel: str, alias: str, base_dir: Path) -> str:
    """A channel's URL as the lock records it: a name gets the alias, a path becomes a file:// URL."""
    if "://" in channel:
        return channel.rstrip("/")
    if channel.startswith((".", "/", "~")):
        return (base_dir / Path(channel).expanduser()).resolve().as_uri()
    return f"{alias.rstrip('/')}/{channel}"


def used_variables(url: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_VARIABLE.findall(url)))


@dataclass(frozen=True)
class ChannelAccess:
    """How one env reaches its channels on this machine."""

    env_name: str
    declared: tuple[str, ...]
    canonical: tuple[str, ...]
    mirrors: tuple[tuple[str, str], ...] = ()
    environ: Mapping[str, str] | None = None

    @classmethod
    def for_env(cls, env_name: str, declared: Sequence[str], *, alias: str, base_dir: Path,
                mirrors: Sequence[tuple[str, str]] = (), environ: Mapping[str, str] | None = None) -> ChannelAccess:
        if not declared:
            raise EnvSpecError(f"env {env_name!r} has conda packages but no 'channels:'; list the channels to "
                               f"solve from (a name such as conda-forge, a URL, or a file:// channel)")
        canonical = tuple(canonical_channel(c, alias, base_dir) for c in declared)
        return cls(env_name, tuple(declared), canonical, tuple(mirrors), environ)

    def _expand(self, url: str) -> str:
        environ = os.environ if self.environ is None else self.environ

        def value(match: re.Match[str]) -> str:
            if match.group(1) not in environ:
                raise EnvSpecError(f"env {self.env_name!r}: channel {url} needs ${{{match.group(1)}}}; set it "
                                   f"(a token or password for that channel) and run again")
            return environ[match.group(1)]

        return _VARIABLE.sub(value, url)

    def _mirrored(self, url: str) -> str:
        for original, mirror in self.mirrors:
            if url == original or url.startswith(original.rstrip("/") + "/"):
                return mirror.rstrip("/") + url[len(original.rstrip("/")):]
        return url

    def fetch_url(self, canonical_url: str) -> str:
        """Where this machine fetches a canonical URL (a channel or a package in it) from."""
        return self._mirrored(self._expand(canonical_url))

    def solve_urls(self) -> list[str]:
        return [self.fetch_url(url) for url in self.canonical]

    def canonical_url(self, fetched: str) -> str:
        """A fetched package URL as the lock records it (mirror undone, credentials back to ${VAR}s)."""
        for channel in sorted(self.canonical, key=len, reverse=True):
            prefix = self.fetch_url(channel).rstrip("/") + "/"
            if fetched.startswith(prefix):
                return channel.rstrip("/") + "/" + fetched[len(prefix):]
        return fetched
