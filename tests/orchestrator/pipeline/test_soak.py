"""Soak: a long run with workers SIGKILLed at random every few seconds. The orchestrator's open files,
threads, child processes and shared-memory segments must stay flat; every video must still be finished.

Not in the default suite (marker `soak`): `.venv/bin/python -m pytest -m soak` (SOAK_SECONDS, default 300).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from statistics import median

import psutil
import pytest

from tests.orchestrator.pipeline.runs import outputs, start, workers_of
from tests.orchestrator.pipeline.test_faults import write_chaos
from workers.shm_ring import SHM_DIR

pytestmark = pytest.mark.soak
SECONDS_PER_VIDEO = 1.5
"""Roughly what one copy of the sample costs here: enough copies keep the run going for SOAK_SECONDS."""
SLACK = {"fds": 4, "threads": 4, "workers": 0, "shm": 1}
"""What the late half's median may exceed the warm quarter's by. Medians, because counts spike for a moment
(FFmpeg's decode and encode threads come and go with each video and clip, a worker caught mid-restart holds a
few fds); a leak grows with the kills, dozens over a soak, and moves the median far past these."""


def sample_usage(proc: psutil.Process) -> dict[str, int]:
    return {"fds": proc.num_fds(), "threads": proc.num_threads(), "workers": len(workers_of(proc)),
            "shm": len(list(Path(SHM_DIR).glob(f"orch-{proc.pid}-*")))}


def test_resources_stay_flat_under_random_kills(sample, tmp_path: Path) -> None:
    seconds = float(os.environ.get("SOAK_SECONDS", "300"))
    videos = []
    for i in range(int(seconds / SECONDS_PER_VIDEO) + 1):
        videos.append(tmp_path / f"v{i:04d}.mp4")
        os.link(sample[0], videos[-1])
    config, out = write_chaos(tmp_path, "soak", videos)
    config.write_text(config.read_text().replace("max_attempts: 8", "max_attempts: 20"))
    proc = start(config)
    parent = psutil.Process(proc.pid)
    rng, kills, usage = random.Random(5), [], []
    deadline = time.monotonic() + seconds
    stop = threading.Event()
    while proc.poll() is None and time.monotonic() < deadline and not stop.wait(rng.uniform(2.0, 8.0)):
        live = workers_of(parent)
        if live:
            victim = rng.choice(live)
            try:
                victim.send_signal(signal.SIGKILL)
                kills.append(victim.pid)
            except psutil.NoSuchProcess:
                pass
        try:
            usage.append(sample_usage(parent))
        except psutil.NoSuchProcess:
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130), stderr[-3000:]
    assert len(kills) >= seconds / 10 and len(usage) >= 10
    warm, late = usage[len(usage) // 4: len(usage) // 2], usage[len(usage) // 2:]  # start-up excluded
    for key, slack in SLACK.items():
        assert median(u[key] for u in late) <= median(u[key] for u in warm) + slack, (key, usage)
    rows, summary = outputs(out)
    assert summary["failures"] in ([], [{"video": "", "reason": "interrupted (Ctrl-C): finished videos were kept",
                                         "clip_index": None, "stage": None}])
    print(f"soak: {len(kills)} kills over {seconds:.0f}s, {summary['videos_done']} videos, "
          f"first/last usage {usage[0]} / {usage[-1]}, peak {max(u['fds'] for u in usage)} fds")
