"""Helpers for tests that run `orchestrator run` as a real subprocess and read what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
RUN = [sys.executable, "-m", "orchestrator.cli", "run"]

PIPELINE = """\
inputs: [{inputs}]
output: {output}
stages:
  - {{name: shots, split: models.transnetv2.TransNetV2ShotDetector, frames: {{size: {size}}}}}
  - name: stats
    model: controlled_model.ControlledModel
    params: {{env: ocr, returns: frame_stats, fail_in: "{fail_in}", how: sigkill, once_marker: "{marker}"{extra}}}
    replicas: {replicas}
    batch_size: {batch}
    frames: {{sampling: per_second, rate: 4, size: [64, 48]}}
  - {{name: keep, filter: {{min_duration_s: 1.6}}}}
"""


def write_pipeline(tmp_path: Path, name: str, inputs: list[Path], *, replicas: int = 1, batch: int = 1,
                   fail_in: str = "", size: str = "[48, 27]", **params: object) -> tuple[Path, Path]:
    out = tmp_path / f"out-{name}"
    config = tmp_path / f"{name}.yaml"
    shutil.copy(FIXTURES / "controlled_model.py", tmp_path / "controlled_model.py")
    config.write_text(PIPELINE.format(inputs=", ".join(str(i) for i in inputs), output=out, replicas=replicas,
                                      batch=batch, fail_in=fail_in, marker=tmp_path / f"{name}.died", size=size,
                                      extra="".join(f", {k}: {json.dumps(v)}" for k, v in params.items())))
    return config, out


DEADLINE_S = 120.0


def wait_for(condition: Callable[[], object], what: str, timeout: float = DEADLINE_S) -> None:
    """Poll `condition` until it holds, failing after `timeout` (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


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


def launch(config: Path, log: Path, *args: str, wrap: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """`orchestrator run CONFIG --quiet ARGS` under `wrap` (a tracer such as strace), its output into `log`:
    runs started side by side never stall on a pipe nobody reads."""
    with log.open("wb") as sink:
        return subprocess.Popen([*wrap, *RUN, str(config), "--quiet", *args], cwd=ROOT, stdout=sink,
                                stderr=subprocess.STDOUT, preexec_fn=_default_signals)


def outputs(out: Path) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "run.json").read_text())


def comparable(rows: list[dict]) -> list[dict]:
    """Rows without what legitimately differs between runs (which worker process answered, and the id of
    the provenance record, which differs with the models' params)."""
    return [{k: ({kk: vv for kk, vv in v.items() if kk != "pid"} if isinstance(v, dict) else v)
             for k, v in row.items() if k != "provenance"} for row in rows]


def workers_of(parent: psutil.Process) -> list[psutil.Process]:
    try:
        return [c for c in parent.children(recursive=True) if "workers" in c.cmdline()]
    except psutil.NoSuchProcess:
        return []


def copy_controlled_model(folder: Path) -> None:
    shutil.copy(FIXTURES / "controlled_model.py", folder / "controlled_model.py")
