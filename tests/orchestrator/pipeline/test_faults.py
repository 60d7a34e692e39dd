"""Faults at random moments: workers SIGKILLed while models load, mid-batch and between batches (seeded),
the parent SIGKILLed mid-run and the run resumed, nothing left behind by a dead parent."""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.orchestrator.pipeline.runs import ROOT, comparable, copy_controlled_model, outputs, run, start, workers_of
from workers.shm_ring import NAME_PREFIX, SHM_DIR

CHAOS = """\
inputs: [{inputs}]
output: {output}
stages:
  - {{name: shots, split: models.transnetv2.TransNetV2ShotDetector, frames: {{size: [48, 27]}},
      max_attempts: 8, max_restarts: 8}}
  - name: stats
    model: controlled_model.ControlledModel
    params: {{env: ocr, returns: frame_stats}}
    replicas: 2
    batch_size: 2
    max_attempts: 8
    max_restarts: 8
    frames: {{sampling: per_second, rate: 4, size: [64, 48]}}
  - name: stats312
    model: controlled_model.ControlledModel
    params: {{env: content_filter, returns: frame_stats}}
    replicas: 2
    max_attempts: 8
    max_restarts: 8
    frames: {{sampling: one_per_clip, size: [32, 24]}}
  - {{name: keep, filter: {{min_duration_s: 1.6}}}}
"""
KILLS = 5
"""Fewer than max_attempts and max_restarts above, so no item or replica can run out of chances."""


def write_chaos(folder: Path, name: str, videos: list[Path]) -> tuple[Path, Path]:
    copy_controlled_model(folder)
    config, out = folder / f"{name}.yaml", folder / f"out-{name}"
    config.write_text(CHAOS.format(inputs=", ".join(map(str, videos)), output=out))
    return config, out


@pytest.fixture(scope="module")
def videos(sample, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("videos")
    copies = [folder / f"v{i}.mp4" for i in range(3)]
    for copy in copies:
        shutil.copy(sample[0], copy)
    return copies


@pytest.fixture(scope="module")
def clean(videos, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    config, out = write_chaos(tmp_path_factory.mktemp("clean"), "clean", videos)
    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    return comparable(outputs(out)[0])


class Killer(threading.Thread):
    """SIGKILLs a random worker of `parent` at seeded random moments, the first while models still load."""

    def __init__(self, parent: psutil.Process, seed: int, kills: int = KILLS) -> None:
        super().__init__(daemon=True)
        self.parent, self.rng, self.kills = parent, random.Random(seed), kills
        self.done = threading.Event()
        self.killed: list[str] = []

    def run(self) -> None:
        while not workers_of(self.parent) and self.parent.is_running() and not self.done.is_set():
            self.done.wait(0.01)
        delays = [self.rng.uniform(0.2, 1.5)] + [self.rng.uniform(0.5, 4.0) for _ in range(self.kills - 1)]
        for delay in delays:
            if self.done.wait(delay):
                return
            live = sorted(workers_of(self.parent), key=lambda p: " ".join(p.cmdline()))
            if not live:
                return
            victim = self.rng.choice(live)
            try:
                name = victim.cmdline()[victim.cmdline().index("--name") + 1]
                victim.send_signal(signal.SIGKILL)
                self.killed.append(name)
            except (psutil.NoSuchProcess, ValueError, IndexError):
                continue


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_worker_kills_lose_and_duplicate_nothing(videos, clean, tmp_path: Path, seed: int) -> None:
    config, out = write_chaos(tmp_path, "chaos", videos)
    proc = start(config)
    killer = Killer(psutil.Process(proc.pid), seed)
    killer.start()
    _, stderr = proc.communicate(timeout=600)
    killer.done.set()
    killer.join()
    assert proc.returncode == 0, stderr[-3000:]
    rows, summary = outputs(out)
    assert comparable(rows) == clean
    assert summary["failures"] == []
    restarts = sum(stage["worker_restarts"] for stage in summary["stages"].values())
    assert killer.killed, "the run ended before any worker was killed"
    assert restarts <= len(killer.killed), (restarts, killer.killed)
    kept = sorted(r["path"] for r in rows if r["path"])
    assert sorted(f"clips/{p.name}" for p in (out / "clips").iterdir()) == kept


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_parent_leaves_nothing_behind_and_the_rerun_resumes(videos, clean, tmp_path: Path) -> None:
    config, out = write_chaos(tmp_path, "resume", videos)
    proc = start(config)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 300
    while not list((out / ".parts").glob("*.json"))[1:] and time.monotonic() < deadline:
        time.sleep(0.05)  # waits for the observable state "a video is finished" (its part beside pipeline.json)
    workers = workers_of(parent)
    assert workers, "no worker was running when the parent was killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=2)
    running = [p for p in alive if _running(p)]  # an exited worker waits as a zombie until init reaps it
    assert not running, f"workers outlived their parent by 2 s: {running}"
    left = list(Path(tempfile.gettempdir()).glob(f"orch-run-{proc.pid}-*"))

    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(out)
    assert comparable(rows) == clean
    assert summary["resumed"] >= 1 and summary["videos_done"] == len(videos)
    kept = sorted(r["path"] for r in rows if r["path"])
    assert sorted(f"clips/{p.name}" for p in (out / "clips").iterdir()) == kept
    assert left, "the killed parent left no runtime folder; the check below would prove nothing"
    assert not any(path.exists() for path in left), "the rerun did not remove the dead run's ipc sockets"
    assert not list(Path(SHM_DIR).glob(f"{NAME_PREFIX}{proc.pid}-*"))


def test_a_changed_config_is_not_resumed_into_old_results(videos, tmp_path: Path) -> None:
    config, out = write_chaos(tmp_path, "changed", videos[:1])
    assert run(config).returncode == 0
    config.write_text(config.read_text().replace("min_duration_s: 1.6", "min_duration_s: 2.0"))
    result = run(config)
    assert result.returncode == 2
    assert "holds results of a different pipeline" in result.stderr and "--fresh" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_quickstart_survives_random_kills(sample, tmp_path: Path) -> None:
    """The real models (TransNetV2, RapidOCR, NudeNet), two replicas per clip stage, workers killed at
    random moments: the same rows as an undisturbed run."""
    quickstart = (ROOT / "examples" / "quickstart.yaml").read_text()
    config = tmp_path / "quickstart.yaml"
    config.write_text(quickstart.replace("  - name: ocr\n", "  - name: ocr\n    replicas: 2\n    max_attempts: 8\n")
                      .replace("  - name: content\n", "  - name: content\n    replicas: 2\n    max_attempts: 8\n"))
    args = ("--input", str(sample[0]), "--output")
    clean = run(config, *args, str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr[-3000:]
    proc = start(config, *args, str(tmp_path / "chaos"))
    killer = Killer(psutil.Process(proc.pid), seed=7, kills=3)
    killer.start()
    _, stderr = proc.communicate(timeout=600)
    killer.done.set()
    killer.join()
    assert proc.returncode == 0, stderr[-3000:]
    assert killer.killed
    assert outputs(tmp_path / "chaos")[0] == outputs(tmp_path / "clean")[0]
