"""Solve, install and activate conda packages with rattler: no conda executable anywhere.

    channels + specs ──solve──▶ RepoDataRecords ──install──▶ prefix ──activate──▶ Activation
                                (conda-lock.yml)          (package cache)    (variables, PATH entries)

rattler is asynchronous and runs its own threads; each call here runs to completion on a private event
loop and drops every rattler object before returning, so no rattler thread outlives the call (one that
does can crash the interpreter as it exits).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import rattler
from rattler.shell import ActivationVariables, Shell, activate

from orchestrator.envs.channels import ChannelAccess
from orchestrator.envs.conda_archives import verified_archive
from orchestrator.errors import EnvBuildError, LockError

T = TypeVar("T")
_BASE_PATH = ("/usr/bin", "/bin")


def run_rattler(make: Callable[[], Awaitable[T]]) -> T:
    """Run one rattler operation to its end, then let go of its objects while the loop is gone."""
    try:
        return asyncio.run(_awaited(make))
    finally:
        gc.collect()


async def _awaited(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


_VIRTUAL_PACKAGES = {
    "linux": {"__unix": "0", "__linux": "5.10", "__glibc": "2.28"},
    "osx": {"__unix": "0", "__osx": "11.0"},
    "win": {"__win": "0"},
}
"""Per platform family, the virtual packages a lock assumes (name -> version): conda-lock's defaults, less
`__cuda`, so a lock picks CPU builds unless a spec asks for CUDA ones."""
_ARCHSPEC = {"64": "x86_64", "aarch64": "aarch64", "arm64": "arm64", "ppc64le": "ppc64le"}


def _virtual_packages(subdir: str) -> list[rattler.GenericVirtualPackage]:
    family, _, arch = subdir.partition("-")
    packages = {name: (version, "0") for name, version in _VIRTUAL_PACKAGES.get(family, {}).items()}
    packages["__archspec"] = ("1", _ARCHSPEC.get(arch, arch))
    return [rattler.GenericVirtualPackage(rattler.PackageName(name), rattler.Version(version),
                                          rattler.BuildString(build)) for name, (version, build) in packages.items()]


def platform() -> str:
    """This machine's conda subdir (`linux-64`, `osx-arm64`, ...)."""
    return str(rattler.Platform.current())


def solve(env_name: str, specs: Sequence[str], access: ChannelAccess, repodata_cache: Path,
          subdir: str) -> list[dict]:
    """The newest consistent set of packages for `specs` on `subdir`, as repodata records (JSON dicts).

    The solve assumes `subdir`'s default virtual packages (conda-lock's, less CUDA) rather than this
    machine's, so any machine locks the same packages and the lock installs on older systems too.
    """
    urls = access.solve_urls()

    async def solved() -> list[dict]:
        gateway = rattler.Gateway(cache_dir=repodata_cache)
        records = await rattler.solve(
            sources=[rattler.Channel(url) for url in urls], specs=list(specs), gateway=gateway,
            platforms=[subdir, "noarch"], virtual_packages=_virtual_packages(subdir),
        )
        return [json.loads(record.to_json()) for record in records]

    try:
        return run_rattler(solved)
    except Exception as exc:  # rattler raises its own exception types, one per failure kind
        reason = _first_line(exc)
        for fetched, canonical in zip(urls, access.canonical, strict=True):
            reason = reason.replace(fetched.rstrip("/"), canonical)  # no credential in a message
        raise LockError(f"env {env_name!r}: cannot solve {list(specs)} from {list(access.declared)}: "
                        f"{reason}") from None


def install(env_name: str, records: Sequence[dict], prefix: Path, access: ChannelAccess, conda_cache: Path) -> None:
    """Link `records` into `prefix`.

    rattler installs each package from its checked archive in `conda_cache/archives/` (see
    `conda_archives`) and keeps the extracted package in `conda_cache/pkgs/`.
    """
    archives = [verified_archive(env_name, r, access, conda_cache / "archives") for r in records]

    async def installed() -> None:
        repodata = [rattler.RepoDataRecord(_package_record(r), r["fn"], archive.as_uri(), archive.parent.as_uri())
                    for r, archive in zip(records, archives, strict=True)]
        await rattler.install(repodata, prefix, cache_dir=conda_cache / "pkgs", show_progress=False,
                              execute_link_scripts=False)

    try:
        run_rattler(installed)
    except Exception as exc:  # rattler raises its own exception types, one per failure kind
        raise EnvBuildError(f"env {env_name!r}: installing its conda packages failed: {_first_line(exc)}") from None


def _package_record(record: dict) -> rattler.PackageRecord:
    return rattler.PackageRecord(
        record["name"], record["version"], rattler.BuildString(record["build"]), int(record.get("build_number", 0)),
        record["subdir"], noarch=rattler.NoArchType(record["noarch"]) if record.get("noarch") else None,
        depends=list(record.get("depends", [])),
        constrains=list(record.get("constrains", [])), sha256=bytes.fromhex(record["sha256"]),
        md5=bytes.fromhex(record["md5"]), size=record.get("size"),
    )


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:3]) or type(exc).__name__


@dataclass(frozen=True)
class Activation:
    """What activating a prefix changes: variables (activate.d scripts included) and PATH entries to prepend."""

    variables: dict[str, str] = field(default_factory=dict)
    path_prepend: tuple[str, ...] = ()


def activation(prefix: Path) -> Activation:
    """Run rattler's bash activation script for `prefix` once, from a minimal environment, and keep the change."""
    script = activate(prefix, ActivationVariables(current_path=list(_BASE_PATH)), Shell.bash).script
    gc.collect()
    base = {"PATH": os.pathsep.join(_BASE_PATH), "HOME": os.environ.get("HOME", "/")}
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="orch-activate-") as file:
        file.write(script)
        file.flush()
        before = _bash_environ(base, [])
        after = _bash_environ(base, [file.name])
    path = after.pop("PATH", "").split(os.pathsep)
    prepend = tuple(entry for entry in dict.fromkeys(path) if entry and entry not in _BASE_PATH)
    variables = {k: v for k, v in after.items() if before.get(k) != v and k not in ("_", "SHLVL", "PWD", "OLDPWD")}
    return Activation(variables, prepend)


def _bash_environ(base: dict[str, str], scripts: list[str]) -> dict[str, str]:
    """The environment bash ends with after sourcing `scripts` (argv only: the script paths are arguments)."""
    program = 'for s in "$@"; do source "$s" >/dev/null || exit 3; done; exec env -0'
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", program, "activate", *scripts],
                          env=base, capture_output=True, timeout=60)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-500:]
        raise EnvBuildError(f"activating a conda env failed (exit {proc.returncode}): {tail}")
    pairs = (item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)
