"""Media workers that die, through `orchestrator run` with real decode, real workers and real kills: each
media step's worker SIGKILLed at seeded moments of its progress loses and duplicates nothing; a video whose
every read kills its media worker (as an FFmpeg crash would) fails alone; a video the media worker cannot
read fails alone with the worker's one-line reason."""

from __future__ import annotations

import contextlib
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


def _listdir(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def child_pids(pid: int) -> set[int]:
    """The children of `pid`, read from its threads' /proc lists: a look costs a file per thread, where
    psutil's `children()` reads every process of the machine (polled every few ms, that would slow the run)."""
    found: set[int] = set()
    for task in _listdir(Path(f"/proc/{pid}/task")):
        with contextlib.suppress(OSError):
            found.update(int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    return found


class MediaWorkers:
    """The live media workers of a process, by their label (`decode/0`, ...). A child's label is read until
    it has one: between fork and exec a worker still shows its parent's command line."""

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self._labels: dict[int, str] = {}

    def now(self) -> dict[str, int]:
        live = {}
        for pid in child_pids(self.parent):
            if pid not in self._labels and (label := _label(pid)) is not None:
                self._labels[pid] = label
            if self._labels.get(pid, "").partition("/")[0] in MEDIA:
                live[self._labels[pid]] = pid
        return live


def _label(pid: int) -> str | None:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return None
    return cmdline[cmdline.index("--name") + 1] if "--name" in cmdline else None


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


@pytest.fixture(scope="module")
def clean(videos, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The rows of an undisturbed run over `videos`."""
    config, out = write_pipeline(tmp_path_factory.mktemp("clean"), videos)
    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(out)
    assert summary["failures"] == [] and all(summary["stages"][step]["worker_restarts"] == 0 for step in MEDIA)
    return comparable(rows)


# --- 1. media workers SIGKILLed at seeded moments -------------------------------------------------------

class Progress:
    """How far each media step is, as the position in the clean run's rows of the furthest clip it has
    reached: split windows and clips' frames written to shared memory (named `<video's place>.split.<first
    frame>` and `<video's place>.<clip>.<stage>`; each lives only until its reader is done, so some go
    unseen: the furthest seen counts), clip files begun in `<out>/.tmp` (`<video>_<clip>.mp4`)."""

    def __init__(self, rows: list[dict], pid: int, out: Path) -> None:
        self.pid, self.out = pid, out
        self.clips = {(r["video_id"], r["clip_index"]): n for n, r in enumerate(rows)}
        self.starts = [(r["video_id"], r["start_frame"], n) for n, r in enumerate(rows)]
        self.reached = dict.fromkeys(MEDIA, -1)
        self.ids = list(dict.fromkeys(r["video_id"] for r in rows))
        """Each video's id by its place in the run (the rows are in input order)."""
        self.folders: list[Path] = []

    def update(self) -> None:
        self.folders = self.folders or frames_dirs(self.pid)  # made once, at the start of the run
        for name in (n for folder in self.folders for n in _listdir(folder)):
            place, _, rest = name.partition(".")
            video = self.ids[int(place)]
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


@dataclass(frozen=True)
class MediaKill:
    worker: str
    reached: int
    """Where its step was (Progress) when the worker was killed."""


class MediaKiller(threading.Thread):
    """SIGKILLs the worker of each media step once, as soon as its step is seen to reach a seeded clip in
    the first half of the run (so the step has work ahead and its pool runs): the worker is then handing
    that item over, or already busy on the next one (decoding, sampling, encoding)."""

    def __init__(self, parent: int, out: Path, rows: list[dict], seed: int) -> None:
        super().__init__(daemon=True)
        self.workers = MediaWorkers(parent)
        self.progress = Progress(rows, parent, out)
        rng = random.Random(seed)
        self.at = {step: rng.randrange(0, len(rows) // 2) for step in MEDIA}
        self.done = threading.Event()
        self.kills: list[MediaKill] = []

    def run(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.kills) < len(MEDIA) and not self.done.is_set() and time.monotonic() < deadline:
            self.progress.update()
            due = [step for step in MEDIA if self.progress.reached[step] >= self.at[step]
                   and not any(k.worker == f"{step}/0" for k in self.kills)]
            workers = self.workers.now() if due else {}
            for step in due:
                if f"{step}/0" in workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(workers[f"{step}/0"], signal.SIGKILL)
                        self.kills.append(MediaKill(f"{step}/0", self.progress.reached[step]))
            self.done.wait(0.002)


@pytest.mark.parametrize("seed", [1, 2])
def test_media_workers_killed_at_seeded_moments_lose_and_duplicate_nothing(videos, clean, tmp_path: Path,
                                                                           seed: int) -> None:
    """Each media step's worker (decode, cut, encode) SIGKILLed once, mid-handoff or mid-work, at a seeded
    point of its progress: the same rows as an undisturbed run, each clip file once and whole, one restart
    per kill, and the run's shared frames gone."""
    config, out = write_pipeline(tmp_path, videos)
    proc = start(config)
    killer = MediaKiller(proc.pid, out, clean, seed)
    killer.start()
    _, stderr = proc.communicate(timeout=300)
    killer.done.set()
    killer.join()
    assert proc.returncode == 0, stderr[-3000:]
    assert sorted(k.worker for k in killer.kills) == ["cut/0", "decode/0", "encode/0"], (killer.kills, killer.at)
    rows, summary = outputs(out)
    assert comparable(rows) == clean
    assert summary["failures"] == []
    assert {step: summary["stages"][step]["worker_restarts"] for step in MEDIA} == dict.fromkeys(MEDIA, 1), \
        killer.kills
    assert_clip_files(out, rows)
    assert not frames_dirs(proc.pid)


# --- 2. a video that crashes its media worker ---------------------------------------------------------

def _traced(pid: int, tracer: int) -> bool:
    """Whether every thread of `pid` is traced by `tracer`."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        return all(f"TracerPid:\t{tracer}\n" in Path(f"/proc/{pid}/task/{t}/status").read_text() for t in tasks)
    except FileNotFoundError:
        return True  # gone: nothing left to trace


class Crasher(threading.Thread):
    """Every media worker of `parent` dies of SIGKILL whenever it opens `video`, as it would of a segfault
    in FFmpeg's demuxer: strace injects the signal into its openat of that path. The orchestrator itself is
    not traced (it opens the video to probe it, and must not die). Each worker is frozen (SIGSTOP) as soon
    as it is seen, traced, then let go: a worker opens a video only after it has started its interpreter,
    said hello and been sent a request, long after the few ms this thread takes to see it (checked: a
    worker seen with the video open already, or that strace could not attach to, is reported in `missed`)."""

    def __init__(self, parent: int, video: Path) -> None:
        super().__init__(daemon=True)
        self.workers, self.video = MediaWorkers(parent), video
        self.done = threading.Event()
        self.tracers: dict[int, subprocess.Popen] = {}
        self.missed: list[str] = []

    def run(self) -> None:
        while not self.done.is_set():
            for name, pid in self.workers.now().items():
                if pid not in self.tracers:
                    self._trace(name, pid)
            self.done.wait(0.005)

    def _trace(self, name: str, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGSTOP)
            fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in _listdir(Path(f"/proc/{pid}/fd"))]
        except (ProcessLookupError, FileNotFoundError):
            return
        if str(self.video) in fds:
            self.missed.append(f"{name}: had the video open already")
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null", "-p", str(pid), "-e", "trace=openat",
                                   "-P", str(self.video), "-e", "inject=openat:signal=SIGKILL"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.tracers[pid] = tracer
        deadline = time.monotonic() + 10
        while not _traced(pid, tracer.pid) and time.monotonic() < deadline and tracer.poll() is None:
            time.sleep(0.001)
        if not _traced(pid, tracer.pid):
            self.missed.append(f"{name}: strace did not attach")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        self.done.set()
        self.join()
        for tracer in self.tracers.values():
            if tracer.poll() is None:
                tracer.terminate()
            tracer.wait(10)


NEEDS_STRACE = pytest.mark.skipif(shutil.which("strace") is None, reason="the crash is injected with strace")


class OthersFailedToo(AssertionError):
    """Videos other than the crashing one did not come out as in an undisturbed run."""


@NEEDS_STRACE
def test_a_video_that_crashes_its_media_worker_every_time_fails_alone(videos, clean, tmp_path: Path) -> None:
    """The media worker dies (SIGKILL) each time it opens one video of three split windows, followed by a good
    one: that video fails after its attempts, naming the worker's deaths; no worker outlives the run, no
    shared frames are left, and the good video comes out as in an undisturbed run."""
    bad = tmp_path / "crashing.mp4"
    write_shots(bad, [(30, PALETTE[0]), (40, PALETTE[2]), (50, PALETTE[4])])
    good = [videos[1]]
    config, out = write_pipeline(tmp_path, [bad, *good])
    proc = start(config)
    crasher = Crasher(proc.pid, bad)
    crasher.start()
    children: set[psutil.Process] = set()
    while proc.poll() is None:  # every process the run started, to check none outlives it
        for pid in child_pids(proc.pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                children.add(psutil.Process(pid))
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=300)
    crasher.stop()
    assert crasher.tracers and not crasher.missed, crasher.missed
    assert proc.returncode == 1, stderr[-3000:]
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    assert not frames_dirs(proc.pid)
    rows, summary = outputs(out)
    failure = next(f for f in summary["failures"] if f["video"] == str(bad))
    assert failure["reason"].startswith("failed on 3 attempts, each time losing its worker") and \
        "decode/0" in failure["reason"] and "SIGKILL" in failure["reason"], failure
    [row] = rows_of(rows, bad)
    assert row["path"] is None and [e["reason"] for e in row["errors"]] == [failure["reason"]]
    assert summary["stages"]["decode"]["worker_restarts"] >= 3 and summary["stages"]["decode"]["poisoned"] >= 1
    others = {str(v): comparable(rows_of(rows, v)) for v in good}
    if others != {str(v): [r for r in clean if r["video"] == str(v)] for v in good} or \
            [f for f in summary["failures"] if f["video"] != str(bad)]:
        raise OthersFailedToo([f for f in summary["failures"] if f["video"] != str(bad)])


# --- 3. a video the media worker cannot read through --------------------------------------------------

def test_a_video_corrupt_mid_stream_keeps_what_decoded_before_and_fails_alone_under_strict(videos, clean,
                                                                                          tmp_path: Path) -> None:
    """Garbage over the middle of a video's frame data: the media workers' decode stops at the damaged packet
    (frame 50 or so, in the second split window). The video keeps the scenes before it, each row noting it
    truncated; under `strict: true` it fails alone with one line naming the file and what decoded; the next
    video comes out as in an undisturbed run either way."""
    whole, corrupt = tmp_path / "whole.mp4", tmp_path / "corrupt.mp4"
    write_shots(whole, [(30, PALETTE[0]), (30, PALETTE[1]), (40, PALETTE[2]), (20, PALETTE[3])])
    data = bytearray(whole.read_bytes())
    frames_start, index_start = data.index(b"mdat") + 4, data.index(b"moov")  # frame data first, index last
    middle = (frames_start + index_start) // 2
    data[middle: middle + 2000] = random.Random(0).randbytes(2000)
    corrupt.write_bytes(bytes(data))
    config, out = write_pipeline(tmp_path, [corrupt, videos[1]])
    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(out)
    decoded = rows_of(rows, corrupt)[0]["truncated"]["decoded_frames"]
    assert 30 < decoded < 100 and summary["failures"] == []
    assert [(r["start_frame"], r["end_frame"]) for r in rows_of(rows, corrupt)] == [(0, 29), (30, decoded - 1)]
    assert all(r["truncated"]["declared_frames"] == 120 for r in rows_of(rows, corrupt))
    assert comparable(rows_of(rows, videos[1])) == [r for r in clean if r["video"] == str(videos[1])]
    assert_clip_files(out, rows)

    config.write_text(config.read_text().replace("stages:\n", "strict: true\nstages:\n"))
    result = run(config, "--fresh")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    rows, summary = outputs(out)
    [failure] = summary["failures"]
    assert failure["video"] == str(corrupt) and "\n" not in failure["reason"], failure
    assert failure["reason"].startswith(f"{corrupt}: decoded {decoded} frames") and \
        failure["reason"].endswith("the file is truncated or damaged (strict: true fails such a video)"), failure
    assert comparable(rows_of(rows, videos[1])) == [r for r in clean if r["video"] == str(videos[1])]
