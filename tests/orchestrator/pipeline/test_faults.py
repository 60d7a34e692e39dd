"""Faults at seeded moments: workers SIGKILLed in each phase they report (starting, loading, mid-batch,
replying, between batches), the parent SIGKILLed mid clip-encode and mid publish and the run resumed,
nothing left behind by a dead parent. More seeds run under the `soak` marker."""

from __future__ import annotations

import random
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from orchestrator.atomic import TMP_SUFFIX
from tests.fixtures.controlled_model import PHASES
from tests.orchestrator.pipeline.chaos import MOMENTS, PhaseKiller, clip_files, kill_parent_at, start_for
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
    params: {{env: ocr, returns: frame_stats, phase_dir: "{phases}/stats", delay_s: 0.05, setup_delay_s: 0.5,
              reply_delay_s: 0.1}}
    replicas: 2
    batch_size: 2
    max_attempts: 8
    max_restarts: 8
    frames: {{sampling: per_second, rate: 4, size: [64, 48]}}
  - name: stats312
    model: controlled_model.ControlledModel
    params: {{env: content_filter, returns: frame_stats, phase_dir: "{phases}/stats312", setup_delay_s: 0.5,
              reply_delay_s: 0.1}}
    replicas: 2
    max_attempts: 8
    max_restarts: 8
    frames: {{sampling: one_per_clip, size: [32, 24]}}
  - {{name: keep, filter: {{min_duration_s: 1.6}}}}
"""
REPORTING = ("stats", "stats312")
"""The stages whose workers report their phase (tests/fixtures/controlled_model.py), each in its own folder."""


def write_chaos(folder: Path, name: str, videos: list[Path]) -> tuple[Path, Path]:
    copy_controlled_model(folder)
    config, out, phases = folder / f"{name}.yaml", folder / f"out-{name}", folder / f"phases-{name}"
    for stage in REPORTING:
        (phases / stage).mkdir(parents=True, exist_ok=True)
    config.write_text(CHAOS.format(inputs=", ".join(map(str, videos)), output=out, phases=phases))
    return config, out


def calls_begun(config: Path) -> dict[str, int]:
    """Model calls each reporting stage has begun so far in runs of `config` (retries included)."""
    phases = config.parent / f"phases-{config.stem}"
    return {stage: len((phases / stage / "calls").read_text().splitlines()) if (phases / stage / "calls").exists()
            else 0 for stage in REPORTING}


@pytest.fixture(scope="module")
def videos(sample, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("videos")
    copies = [folder / f"v{i}.mp4" for i in range(3)]
    for copy in copies:
        shutil.copy(sample[0], copy)
    return copies


@dataclass(frozen=True)
class CleanRun:
    rows: list[dict]
    calls: dict[str, int]
    """Calls per reporting stage in an undisturbed run: one per item."""


@pytest.fixture(scope="module")
def clean(videos, tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    config, out = write_chaos(tmp_path_factory.mktemp("clean"), "clean", videos)
    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    return CleanRun(comparable(outputs(out)[0]), calls_begun(config))


class Killer(threading.Thread):
    """SIGKILLs a random worker of `parent` at seeded random moments, the first while models still load."""

    def __init__(self, parent: psutil.Process, seed: int, kills: int) -> None:
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



@pytest.mark.parametrize("seed", [1, 2])
def test_worker_kills_in_every_phase_lose_nothing_and_each_costs_one_restart(videos, clean, tmp_path: Path,
                                                                             seed: int) -> None:
    config, out = write_chaos(tmp_path, "chaos", videos)
    proc = start(config)
    killer = PhaseKiller(psutil.Process(proc.pid), tmp_path / "phases-chaos", clean.calls, seed)
    killer.start()
    _, stderr = proc.communicate(timeout=600)
    killer.done.set()
    killer.join()
    assert proc.returncode == 0, stderr[-3000:]
    assert sorted(kill.phase for kill in killer.kills) == sorted(PHASES), (killer.kills, killer.missed)
    rows, summary = outputs(out)
    assert comparable(rows) == clean.rows
    assert summary["failures"] == []
    restarts = {name: stage["worker_restarts"] for name, stage in summary["stages"].items()}
    killed = {name: sum(kill.worker.startswith(f"{name}/") for kill in killer.kills) for name in restarts}
    assert restarts == killed  # every kill met a live worker of a running pool: one restart each, no more
    kept = sorted(r["path"] for r in rows if r["path"])
    assert sorted(f"clips/{p.name}" for p in (out / "clips").iterdir()) == kept


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(3, 11))
def test_worker_kills_in_every_phase_over_more_seeds(videos, clean, tmp_path: Path, seed: int) -> None:
    test_worker_kills_in_every_phase_lose_nothing_and_each_costs_one_restart(videos, clean, tmp_path, seed)


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


NEEDS_STRACE = pytest.mark.skipif(shutil.which("strace") is None, reason="a kill mid-publish slows fsync with strace")


@pytest.mark.parametrize(("moment", "seed"), [("encode", 1), pytest.param("publish", 2, marks=NEEDS_STRACE)])
def test_a_parent_killed_mid_encode_or_mid_publish_leaves_nothing_behind_and_resumes_untouched(
        videos, clean, tmp_path: Path, moment: str, seed: int) -> None:
    """The orchestrator SIGKILLed while a clip is half-encoded, or while a finished video's record is written
    but not yet renamed into place (every fsync slowed by strace, as on a slow disk); the rerun resumes the
    videos published before, leaving their clip files as they were, and ends as an undisturbed run."""
    config, out = write_chaos(tmp_path, "resume", videos)
    launched, parent = start_for(config, moment)
    try:
        kill = kill_parent_at(parent, out, moment, seed)
    finally:
        launched.communicate(timeout=30)
    assert kill.workers, "no worker was running when the parent was killed"
    _, alive = psutil.wait_procs(kill.workers, timeout=2)
    running = [p for p in alive if _running(p)]  # an exited worker waits as a zombie until init reaps it
    assert not running, f"workers outlived their parent by 2 s: {running}"

    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(out)
    assert comparable(rows) == clean.rows
    assert summary["videos_done"] == len(videos)
    after = clip_files(out)
    untouched = {row["video"] for row in rows if row["path"]} - {
        row["video"] for row in rows if row["path"] and kill.published.get(row["path"]) != after[row["path"]]}
    assert summary["resumed"] >= 1 and len(untouched) == summary["resumed"], (kill, summary["resumed"])
    kept = sorted(r["path"] for r in rows if r["path"])
    assert sorted(after) == kept
    left_over = [p.relative_to(out) for p in out.rglob("*") if p.name.endswith(TMP_SUFFIX) or p.suffix == ".mp4"
                 and p.parent != out / "clips"]
    assert set(left_over) <= {kill.torn}, left_over  # at most the dead run's torn record, never taken as one
    assert kill.runtime_dirs, "the killed parent had no runtime folder; the check below would prove nothing"
    assert not any(path.exists() for path in kill.runtime_dirs), "the rerun did not remove the dead run's sockets"
    assert not list(Path(SHM_DIR).glob(f"{NAME_PREFIX}{kill.pid}-*"))


@pytest.mark.soak
@pytest.mark.parametrize(("moment", "seed"), [pytest.param(m, s, marks=NEEDS_STRACE if m == "publish" else ())
                                              for m in MOMENTS for s in range(3, 7)])
def test_a_parent_killed_mid_encode_or_mid_publish_over_more_seeds(videos, clean, tmp_path: Path, moment: str,
                                                                   seed: int) -> None:
    test_a_parent_killed_mid_encode_or_mid_publish_leaves_nothing_behind_and_resumes_untouched(
        videos, clean, tmp_path, moment, seed)

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
