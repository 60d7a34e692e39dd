"""Run the installer tool (uv) as argv lists and turn failures into clear errors."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from orchestrator.errors import EnvBuildError

TAIL_LINES = 20


def uv_executable() -> str:
    """The uv binary: the one installed beside this interpreter (a dependency), else PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise EnvBuildError("uv is not installed: run `pip install uv` in the orchestrator's environment") from None
        return found


def run_tool(argv: Sequence[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run an installer; on failure raise EnvBuildError with `what` and the tool's last lines."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, env=env)
    except OSError as exc:
        raise EnvBuildError(f"{what}: could not start {argv[0]}: {exc}") from None
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip().splitlines()
        tail = "\n".join(output[-TAIL_LINES:])
        raise EnvBuildError(f"{what} failed (exit {proc.returncode}); last lines:\n{tail}")
    return proc.stdout
