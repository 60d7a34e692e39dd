"""Find an installed interpreter for `python=X.Y`; interpreters are found, never downloaded."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import EnvSpecError

_PROBE = (
    "import json, platform, sys, sysconfig;"
    "print(json.dumps({'version': platform.python_version(), 'platform': sysconfig.get_platform(),"
    " 'implementation': sys.implementation.name}))"
)


@dataclass(frozen=True)
class Interpreter:
    """A base interpreter and the facts an environment's cache key depends on."""

    path: Path
    version: str
    platform: str
    implementation: str

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


@functools.lru_cache(maxsize=64)
def probe_interpreter(path: Path) -> Interpreter | None:
    """Ask an interpreter what it is; None if it does not run (e.g. a pyenv shim for another version)."""
    try:
        out = subprocess.run([str(path), "-c", _PROBE], capture_output=True, text=True, timeout=30, check=True)
        facts = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return None
    return Interpreter(path, facts["version"], facts["platform"], facts["implementation"])


def _candidates(minor: str) -> list[Path]:
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    pyenv = sorted(
        pyenv_root.glob(f"versions/{minor}.*/bin/python{minor}"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.parent.name.split(".")],
        reverse=True,
    )
    found = [Path(sys.executable)] if f"{sys.version_info[0]}.{sys.version_info[1]}" == minor else []
    found += pyenv
    on_path = shutil.which(f"python{minor}")
    found += [Path(on_path)] if on_path else []
    found += [Path(f"/usr/bin/python{minor}"), Path(f"/usr/local/bin/python{minor}")]
    return found


def find_interpreter(minor: str, env_name: str) -> Interpreter:
    """The first working CPython `minor` (e.g. "3.12") among this process, pyenv, PATH, /usr."""
    for candidate in _candidates(minor):
        if candidate.exists() and (interp := probe_interpreter(candidate)) and interp.minor == minor:
            return interp
    raise EnvSpecError(
        f"env {env_name!r} needs Python {minor} but none is installed (looked in pyenv, PATH, /usr/bin): "
        f"install it (e.g. `pyenv install {minor}`) or change 'python=' in envs/{env_name}/environment.yml"
    )
