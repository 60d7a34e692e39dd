"""Helpers for tests that run `orchestrator run` as a real subprocess and read what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
RUN = [sys.executable, "-m", "orchestrator.cli", "run"]


def _default_signals() -> None:
    """A child of a suite started in the background inherits SIGINT ignored: tests set it explicitly."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run(config: Path, *args: str, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`orchestrator run CONFIG --quiet ARGS`, with `environ` added to this process's environment."""
    return subprocess.run([*RUN, str(config), "--quiet", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, preexec_fn=_default_signals, env={**os.environ, **(environ or {})})


def start(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*RUN, str(config), "--quiet", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)


def outputs(out: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "run.json").read_text())


def comparable(rows: list[dict]) -> list[dict]:
    """Rows without what legitimately differs between runs (which worker process answered)."""
    return [{k: ({kk: vv for kk, vv in v.items() if kk != "pid"} if isinstance(v, dict) else v)
             for k, v in row.items()} for row in rows]


def workers_of(parent: psutil.Process) -> list[psutil.Process]:
    try:
        return [c for c in parent.children(recursive=True) if "workers" in c.cmdline()]
    except psutil.NoSuchProcess:
        return []


def copy_controlled_model(folder: Path) -> None:
    shutil.copy(FIXTURES / "controlled_model.py", folder / "controlled_model.py")
