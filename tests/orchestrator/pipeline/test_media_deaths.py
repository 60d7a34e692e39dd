"""Media workers that die, through `orchestrator run` with real decode, real workers and real kills: each
media step's worker SIGKILLed at seeded moments of its progress loses and duplicates nothing; a video whose
every read kills its media worker (as an FFmpeg crash would) fails alone; a video the media worker cannot
read fails alone with the worker's one-line reason."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av
import psutil
import pytest

from tests.orchestrator.pipeline.media import write_shots
from tests.orchestrator.pipeline.runs import FIXTURES, comparable, copy_controlled_model, outputs, run, start
from workers.shared_frames import FRAMES_PREFIX, SHM_ROOT

PIPELINE = """\
inputs: [{inputs}]
output: {output}
stages:
  - {{name: shots, split: colour_splitter.ColourSplitter, params: {{env: ocr}}, frames: {{size: [32, 24]}}}}
  - name: stats
    model: controlled_model.ControlledModel
    params: {{env: ocr, returns: frame_stats}}
    frames: {{sampling: one_per_clip, size: [16, 12]}}
  - {{name: keep, filter: {{min_duration_s: 0.9}}}}
"""
MEDIA = ("decode", "cut", "encode")
PALETTE = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (200, 40, 200), (40, 200, 200)]
WAIT_S = 120.0
"""Longest a killer waits for the moment it wants before it reports the moment missed."""


def write_pipeline(folder: Path, videos: list[Path]) -> tuple[Path, Path]:
    copy_controlled_model(folder)
    shutil.copy(FIXTURES / "colour_splitter.py", folder / "colour_splitter.py")
    config, out = folder / "pipeline.yaml", folder / "out"
    config.write_text(PIPELINE.format(inputs=", ".join(map(str, videos)), output=out))
    return config, out


def rows_of(rows: list[dict], video: Path) -> list[dict]:
    return [r for r in rows if r["video"] == str(video)]


def media_workers(parent: psutil.Process) -> dict[str, psutil.Process]:
    """The live media workers of `parent`, by their label (`decode/0`, ...)."""
    found = {}
    try:
        children = parent.children()
    except psutil.NoSuchProcess:
        return {}
    for child in children:
        try:
            cmdline = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "--name" in cmdline and cmdline[cmdline.index("--name") + 1].partition("/")[0] in MEDIA:
            found[cmdline[cmdline.index("--name") + 1]] = child
    return found


def frames_dirs(pid: int) -> list[Path]:
    """The frames folders in /dev/shm of the orchestrator `pid` (its owner tag starts with its pid)."""
    return sorted(SHM_ROOT.glob(f"{FRAMES_PREFIX}{pid}-*"))


def assert_clip_files(out: Path, rows: list[dict]) -> None:
    """The clip files are exactly the kept rows' (none missing, none twice, no stray half-made one), each
    with its clip's frame count."""
    kept = sorted(r["path"] for r in rows if r["path"])
    assert sorted(f"clips/{p.name}" for p in (out / "clips").iterdir()) == kept
    assert not [p for p in out.rglob("*.mp4") if p.parent != out / "clips"]
    for row in rows:
        if row["path"]:
            with av.open(str(out / row["path"])) as clip:
                assert sum(1 for _ in clip.decode(video=0)) == row["end_frame"] - row["start_frame"] + 1, row


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four videos of 240 to 330 frames in shots of 12 to 41 frames: six split windows or more each."""
    folder = tmp_path_factory.mktemp("videos")
    paths = []
    for v in range(4):
        path = folder / f"v{v}.mp4"
        write_shots(path, [(12 + (v * 7 + i * 11) % 30, PALETTE[(i + v) % 6]) for i in range(11)])
        paths.append(path)
    return paths


@dataclass(frozen=True)
class CleanRun:
    rows: list[dict]
    items: dict[str, int]
    """Items each media step handled in an undisturbed run."""


@pytest.fixture(scope="module")
def clean(videos, tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    config, out = write_pipeline(tmp_path_factory.mktemp("clean"), videos)
    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(out)
    assert summary["failures"] == [] and all(summary["stages"][step]["worker_restarts"] == 0 for step in MEDIA)
    return CleanRun(comparable(rows), {step: summary["stages"][step]["items"] for step in MEDIA})


# --- 1. media workers SIGKILLed at seeded moments -------------------------------------------------------

class Progress:
    """How far each media step is, as the position in the clean run's rows of the furthest clip it has
    reached: split windows and clips' frames written to shared memory (named `<video>.split.<first frame>`
    and `<video>.<clip>.<stage>`; each lives only until its reader is done, so some go unseen: the furthest
    seen counts), clip files begun in `<out>/.tmp` (`<video>_<clip>.mp4`)."""

    def __init__(self, rows: list[dict], pid: int, out: Path) -> None:
        self.pid, self.out = pid, out
        self.clips = {(r["video_id"], r["clip_index"]): n for n, r in enumerate(rows)}
        self.starts = [(r["video_id"], r["start_frame"], n) for n, r in enumerate(rows)]
        self.reached = dict.fromkeys(MEDIA, -1)

    def update(self) -> None:
        for name in (n for folder in frames_dirs(self.pid) for n in _listdir(folder)):
            video, _, rest = name.partition(".")
            if rest.startswith("split."):  # the last clip that starts before the window's first frame
                first = int(rest.removeprefix("split."))
                self._reach("decode", max((n for v, s, n in self.starts if v == video and s <= first), default=-1))
            else:
                self._reach("cut", self.clips.get((video, int(rest.partition(".")[0])), -1))
        for name in _listdir(self.out / ".tmp"):
            video, _, index = name.removesuffix(".mp4").rpartition("_")
            self._reach("encode", self.clips.get((video, int(index)), -1))

    def _reach(self, step: str, position: int) -> None:
        self.reached[step] = max(self.reached[step], position)


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class MediaKill:
    worker: str
    reached: int
    """Where its step was (Progress) when the worker was killed."""


class MediaKiller(threading.Thread):
    """SIGKILLs the worker of each media step once, as soon as its step is seen to reach a seeded clip in
    the first half of the run (so the step has work ahead and its pool runs): the worker is then handing
    that item over, or already busy on the next one (decoding, sampling, encoding)."""

    def __init__(self, parent: psutil.Process, out: Path, rows: list[dict], seed: int) -> None:
        super().__init__(daemon=True)
        self.parent = parent
        self.progress = Progress(rows, parent.pid, out)
        rng = random.Random(seed)
        self.at = {step: rng.randrange(0, len(rows) // 2) for step in MEDIA}
        self.done = threading.Event()
        self.kills: list[MediaKill] = []

    def run(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.kills) < len(MEDIA) and not self.done.is_set() and time.monotonic() < deadline:
            self.progress.update()
            workers = media_workers(self.parent)
            for step in MEDIA:
                killed = any(k.worker.startswith(f"{step}/") for k in self.kills)
                if not killed and self.progress.reached[step] >= self.at[step] and f"{step}/0" in workers:
                    workers[f"{step}/0"].send_signal(signal.SIGKILL)
                    self.kills.append(MediaKill(f"{step}/0", self.progress.reached[step]))
            self.done.wait(0.002)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_media_workers_killed_at_seeded_moments_lose_and_duplicate_nothing(videos, clean, tmp_path: Path,
                                                                           seed: int) -> None:
    """Each media step's worker (decode, cut, encode) SIGKILLed once, mid-handoff or mid-work, at a seeded
    point of its progress: the same rows as an undisturbed run, each clip file once and whole, one restart
    per kill, and the run's shared frames gone."""
    config, out = write_pipeline(tmp_path, videos)
    proc = start(config)
    killer = MediaKiller(psutil.Process(proc.pid), out, clean.rows, seed)
    killer.start()
    _, stderr = proc.communicate(timeout=300)
    killer.done.set()
    killer.join()
    assert proc.returncode == 0, stderr[-3000:]
    assert sorted(k.worker for k in killer.kills) == ["cut/0", "decode/0", "encode/0"], (killer.kills, killer.at)
    rows, summary = outputs(out)
    assert comparable(rows) == clean.rows
    assert summary["failures"] == []
    assert {step: summary["stages"][step]["worker_restarts"] for step in MEDIA} == dict.fromkeys(MEDIA, 1), \
        killer.kills
    assert_clip_files(out, rows)
    assert not frames_dirs(proc.pid)
