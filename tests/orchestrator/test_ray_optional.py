"""Ray is an optional extra: without it, `--executor ray` says how to get it; the local executor never needs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_RAY = ("import sys; sys.modules['ray'] = None; from orchestrator.cli import main; "
               "sys.argv[0] = 'orchestrator'; main()")


def orchestrator_without_ray(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process where `import ray` fails, as on a machine without the extra."""
    return subprocess.run([sys.executable, "-c", WITHOUT_RAY, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_the_ray_executor_without_ray_names_the_extra(tmp_path: Path) -> None:
    result = orchestrator_without_ray("run", "examples/quickstart.yaml", "-o", str(tmp_path), "--quiet",
                                      "--executor", "ray")
    assert result.returncode != 0
    assert "uv sync --frozen --extra ray" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run.json").exists()


def test_ray_options_without_the_ray_executor_are_refused(tmp_path: Path) -> None:
    result = orchestrator_without_ray("run", "examples/quickstart.yaml", "-o", str(tmp_path), "--address", "auto")
    assert result.returncode == 2
    assert "--address and --weights-from apply to --executor ray" in result.stderr
    assert "Traceback" not in result.stderr
