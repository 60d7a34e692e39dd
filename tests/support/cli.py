"""The command line as a user runs it: a real subprocess, its output captured."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.paths import ORCHESTRATOR, ROOT


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
            **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ORCHESTRATOR, *args], cwd=cwd, env={**os.environ, "COLUMNS": "200", **(env or {})},
                          capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]
