"""The orchestrator's own environment is what `uv.lock` pins: the lock must match `pyproject.toml` (else
`scripts/setup.sh`, which installs the lock as it is, would install yesterday's dependencies), and it must
never pull in what only model envs may hold."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[2]


def test_the_lock_matches_pyproject() -> None:
    done = subprocess.run([find_uv_bin(), "lock", "--check", "--offline", "--python", sys.executable], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"uv.lock is out of date with pyproject.toml; run `.uv/bin/uv lock`:\n{done.stderr}"


def test_the_lock_holds_no_model_framework() -> None:
    locked = set(re.findall(r'^name = "(.+)"$', (ROOT / "uv.lock").read_text(), re.MULTILINE))
    assert {"typer", "pydantic", "pyzmq", "uv"} <= locked
    assert not locked & {"torch", "torchvision", "transformers", "onnxruntime", "opencv-python", "tensorflow"}
