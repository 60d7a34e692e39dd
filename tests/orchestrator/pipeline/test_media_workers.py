"""The media workers through `orchestrator run`, with real worker processes and real video: frames reach the
models without passing through the orchestrator, `encode: kept` encodes exactly the clips the filters keep,
every media mode writes the same outputs, and the frames' shared memory is freed as the run goes.

The runs are started side by side once for the module (`media_runs`) and each test reads what it needs of them:
their rows and run.json, the clip files each one opened for writing (strace), and how many shared-frame
segments its frames folder held at most while it ran (sampled from this process)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import psutil
import pytest

from orchestrator.pipeline.executor import QUEUE_DEPTH
from tests.orchestrator.pipeline.media import write_shots
from tests.orchestrator.pipeline.runs import FIXTURES, comparable, launch, outputs
from workers.shared_frames import FRAMES_PREFIX, SHM_ROOT

NEEDS_STRACE = pytest.mark.skipif(shutil.which("strace") is None, reason="encoder opens are counted with strace")
RUN_TIMEOUT_S = 180.0

PALETTE = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (200, 40, 200), (40, 200, 200)]
WIDTH, HEIGHT = 320, 240
SHOTS = {"one.mp4": [30, 12, 40, 18, 26, 30], "two.mp4": [20, 36, 14, 30, 22, 28]}
"""Frames per shot of the two videos the media modes are compared on: at 24 fps, the shots under a second are
filtered out (5 of the 12)."""
MANY = [3, 5] * 50
"""A video of 100 shots, for the shared-memory runs: the 3-frame shots are filtered out, the 5-frame ones kept."""

SPLIT = "  - {name: shots, split: colour_splitter.ColourSplitter, params: {env: ocr}}\n"
LOOK = "  - {name: look, model: frame_shape.FrameShape, params: {env: ocr}}\n"
GLANCE = ("  - {name: glance, model: frame_shape.FrameShape, params: {env: ocr}, "
          "frames: {sampling: per_second, rate: 6, size: [160, 120]}}\n")
FIRST = "  - {name: first, model: frame_shape.FrameShape, params: {env: ocr}, frames: {sampling: one_per_clip}}\n"
AFTER = "  - {name: after, model: frame_shape.FrameShape, params: {env: ocr}, frames: {sampling: one_per_clip}}\n"


def keep(min_duration_s: float) -> str:
    return f"  - {{name: keep, filter: {{min_duration_s: {min_duration_s}}}}}\n"


WINDOW = 4
"""Items a stage pool of one replica (batch 1) holds at once, answered or not: two requests in flight and two
more (StagePool._window)."""
SPLIT_SEGMENTS = WINDOW + QUEUE_DEPTH + WINDOW
"""Split windows in shared memory at once: held by the decode pool, in the channel, held by the split pool."""
ONE_STAGE_BOUND = SPLIT_SEGMENTS + WINDOW + QUEUE_DEPTH + WINDOW
"""Segments at once with one clip stage: the split windows, and each clip's frames for the stage from the cut
pool's answer, through the channel, to the stage pool's answer."""
FILTER_BETWEEN_BOUND = SPLIT_SEGMENTS + 2 * (WINDOW + QUEUE_DEPTH + WINDOW) + QUEUE_DEPTH + 1
"""With a filter between two clip stages: each clip holds both stages' frames until the first stage answers,
the second's through the channel to the filter and the clip the filter judges, which frees them when it drops
the clip."""


@dataclass(frozen=True)
class Plan:
    """One run of the module: its pipeline, and how it is watched."""

    videos: tuple[str, ...]
    stages: str
    media: str = "{replicas: 1}"
    encode: str = "kept"
    traced: bool = False
    """Under strace (where it is installed), which records every file opened for writing."""
    sampled: bool = False
    """Its frames folder is sampled while it runs."""


PLANS = {
    "kept": Plan(("one.mp4", "two.mp4"), SPLIT + LOOK + GLANCE + keep(1.0), traced=True),
    "all": Plan(("one.mp4", "two.mp4"), SPLIT + LOOK + GLANCE + keep(1.0), encode="all", traced=True),
    "replicas": Plan(("one.mp4", "two.mp4"), SPLIT + LOOK + GLANCE + keep(1.0), media="{replicas: 2}"),
    "none": Plan(("many.mp4",), SPLIT + FIRST + keep(0.16), encode="none", traced=True, sampled=True),
    "filter_between": Plan(("many.mp4",), SPLIT + FIRST + keep(10.0) + AFTER, encode="none", sampled=True),
}


@dataclass
class Segments:
    """What a run's frames folder (`/dev/shm/orch-frames-<pid>-…`) held, sampled while the run went on."""

    peak: int = 0
    samples: int = 0
    """Samples that found the folder."""
    left: list[str] = field(default_factory=list)
    """The run's frames folders still there once it exited."""


@dataclass
class Run:
    out: Path
    rows: list[dict]
    summary: dict
    opened: list[str] | None
    """The clip files (names in <out>/.tmp) opened for writing, once per open; None: not traced."""
    segments: Segments | None


def write_videos(folder: Path) -> dict[str, Path]:
    paths = {name: folder / name for name in [*SHOTS, "many.mp4"]}
    for k, (name, lengths) in enumerate(SHOTS.items()):  # the videos' colours differ as their lengths do
        write_shots(paths[name], [(n, PALETTE[(i + 3 * k) % 6]) for i, n in enumerate(lengths)], (WIDTH, HEIGHT))
    write_shots(paths["many.mp4"], [(n, PALETTE[i % 6]) for i, n in enumerate(MANY)])
    return paths


def write_config(folder: Path, plan: Plan, videos: dict[str, Path]) -> tuple[Path, Path]:
    config, out = folder / "pipeline.yaml", folder / "out"
    folder.mkdir()
    shutil.copy(FIXTURES / "colour_splitter.py", folder / "colour_splitter.py")
    shutil.copy(FIXTURES / "frame_shape.py", folder / "frame_shape.py")
    config.write_text(f"inputs: [{', '.join(str(videos[v]) for v in plan.videos)}]\noutput: {out}\n"
                      f"media: {plan.media}\nclips: {{encode: {plan.encode}}}\nstages:\n{plan.stages}")
    return config, out


def run_pids(proc: subprocess.Popen) -> set[int]:
    """The started process and all its descendants (under strace, the run is one of strace's children)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return {proc.pid, *(child.pid for child in psutil.Process(proc.pid).children(recursive=True))}
    return {proc.pid}


def owned_by(folder: Path, pids: set[int]) -> bool:
    """The folder's owner tag (`<pid>-<random>`) names one of `pids`."""
    owner = folder.name[len(FRAMES_PREFIX):].split("-", 1)[0]
    return owner.isdigit() and int(owner) in pids


def watch_segments(proc: subprocess.Popen, seen: Segments, deadline: float) -> None:
    """Count the segments in the run's frames folder until the run exits, then list what it left. The
    folder's owner tag starts with the pid of a process of the run's tree, so the runs of other processes
    on the host are not counted."""
    folders: list[Path] = []
    while proc.poll() is None and time.monotonic() < deadline:
        if not folders:
            pids = run_pids(proc)
            folders = [f for f in SHM_ROOT.glob(f"{FRAMES_PREFIX}*") if owned_by(f, pids)]
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                count = len(os.listdir(folder))
                seen.samples += 1
                seen.peak = max(seen.peak, count)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.01)
    seen.left = [folder.name for folder in folders if folder.exists()]


def opened_clips(trace: Path, out: Path) -> list[str]:
    """Names of the clip files in `<out>/.tmp` that some process opened to write, once per open."""
    opened = re.compile(rf'openat\([^,]+, "{re.escape(str(out / ".tmp"))}/([^"/]+\.mp4)", ([A-Z_|]+)')
    return sorted(m[1] for m in opened.finditer(trace.read_text()) if "O_CREAT" in m[2] or "O_WRONLY" in m[2])


@dataclass
class Started:
    """A run under way, and the thread sampling its frames folder."""

    folder: Path
    plan: Plan
    proc: subprocess.Popen
    traced: bool
    segments: Segments | None
    watcher: threading.Thread | None

    @classmethod
    def start(cls, folder: Path, plan: Plan, videos: dict[str, Path], deadline: float) -> Started:
        config, _ = write_config(folder, plan, videos)
        traced = plan.traced and shutil.which("strace") is not None
        wrap = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=openat", "-o", str(folder / "trace.log")]
        proc = launch(config, folder / "run.log", "--no-report", wrap=wrap if traced else ())
        segments, watcher = (Segments(), None) if plan.sampled else (None, None)
        if segments is not None:
            watcher = threading.Thread(target=watch_segments, args=(proc, segments, deadline))
            watcher.start()
        return cls(folder, plan, proc, traced, segments, watcher)

    def stop(self, deadline: float) -> None:
        """Wait for the run until `deadline`, then kill it and its workers if it still runs."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(max(deadline - time.monotonic(), 0.0))
        if self.proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
            self.proc.kill()
            self.proc.wait(10)
        if self.watcher is not None:
            self.watcher.join(10)

    def read(self) -> Run:
        assert self.proc.returncode == 0, f"{self.folder.name}: {(self.folder / 'run.log').read_text()[-3000:]}"
        out = self.folder / "out"
        rows, summary = outputs(out)
        return Run(out, rows, summary, opened_clips(self.folder / "trace.log", out) if self.traced else None,
                   self.segments)


@pytest.fixture(scope="module")
def media_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every run of PLANS, side by side (they share nothing but the videos); what each one left and did."""
    root = tmp_path_factory.mktemp("media-workers")
    videos = write_videos(root)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    started: dict[str, Started] = {}
    try:
        for name, plan in PLANS.items():
            started[name] = Started.start(root / name, plan, videos, deadline)
        for run in started.values():
            run.stop(deadline)
    finally:  # on an error or Ctrl-C above, no run is left behind
        for run in started.values():
            run.stop(time.monotonic())
    return {name: run.read() for name, run in started.items()}


def test_frames_reach_the_models_without_passing_through_the_orchestrator(media_runs: dict[str, Run]) -> None:
    """What the orchestrator sent and received on its stages' sockets and rings is a sliver of the frames its
    models were given: it moves requests and names of shared frames, never pixels. One full-size frame per
    clip through it would be 2% of those frames, and every frame 100%."""
    for name in ("kept", "all", "replicas"):
        stages = media_runs[name].summary["stages"]
        assert {"decode", "shots", "cut", "look", "glance"} <= set(stages), name
        moved = {stage: stats["bytes_moved"] for stage, stats in stages.items()}
        assert all(moved[stage] > 0 for stage in set(stages) - {"keep"}), (name, moved)  # the counter counts
        rows = media_runs[name].rows
        assert all(row["look"]["shape"] == [row["frames"], HEIGHT, WIDTH, 3] for row in rows)
        given = sum(int(np.prod(row[stage]["shape"])) for row in rows for stage in ("look", "glance"))
        given += sum(sum(lengths) for lengths in SHOTS.values()) * HEIGHT * WIDTH * 3  # each frame to the split
        assert sum(moved.values()) < 0.01 * given, (name, moved, given)


def clip_names(rows: list[dict]) -> list[str]:
    return sorted(f"{row['clip_id']}.mp4" for row in rows if row["clip_index"] is not None)


@NEEDS_STRACE
def test_kept_encodes_only_the_clips_the_filters_keep_and_all_encodes_every_clip(media_runs: dict[str, Run]) -> None:
    """Every open of a clip file for writing, in any process of the run, is an encoder starting: with
    `encode: kept` one per kept clip and none for a clip the filter dropped; with `encode: all` one per clip."""
    kept, every = media_runs["kept"], media_runs["all"]
    kept_names = sorted(f"{row['clip_id']}.mp4" for row in kept.rows if row["kept"])
    assert 0 < len(kept_names) < len(clip_names(kept.rows))  # the filter dropped some: they are not encoded
    assert kept.opened == kept_names
    assert sorted(Path(row["path"]).name for row in kept.rows if row["path"]) == kept_names
    assert every.opened == clip_names(every.rows)  # every clip, each once; the dropped files deleted
    assert sorted(p.name for p in (every.out / "clips").iterdir()) == kept_names


@NEEDS_STRACE
def test_encode_none_writes_no_clip_file_and_keeps_the_rows(media_runs: dict[str, Run]) -> None:
    """No encoder opens a file, and each clip the filter passed is kept, without a path."""
    run = media_runs["none"]
    assert run.opened == []
    assert not list((run.out / "clips").glob("*"))
    assert len(run.rows) == len(MANY)
    assert all(row["path"] is None for row in run.rows)
    assert [row["kept"] for row in run.rows] == [n >= 4 for n in MANY]
    assert [row["filtered_by"] for row in run.rows] == [None if n >= 4 else ["keep:min_duration_s"] for n in MANY]


TOLERANCE = 1.0
"""Mean absolute difference (levels of 255) between two decodes of one frame that still count as equal."""


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b).mean())


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as clip:
        return [frame.to_ndarray(format="rgb24") for frame in clip.decode(video=0)]


def test_every_media_mode_writes_the_same_rows_and_clips(media_runs: dict[str, Run]) -> None:
    """`encode: kept`, `encode: all` and two media replicas: the same rows (the models saw the same frames:
    their means are equal) and clip files that decode to the same frames, up to x264's own variation (its
    output follows its thread count): a mean difference under one level, where the next frame of the same
    shot (its grain moved by a pixel) differs by more than twice that, so a clip one frame off fails."""
    reference = media_runs["kept"]
    assert len(reference.rows) == sum(len(lengths) for lengths in SHOTS.values())
    clips = {row["path"]: decoded(reference.out / row["path"]) for row in reference.rows if row["path"]}
    assert min(difference(a, b) for frames in clips.values() for a, b in pairwise(frames)) > 2 * TOLERANCE
    for name in ("all", "replicas"):
        other = media_runs[name]
        assert comparable(other.rows) == comparable(reference.rows), name
        assert sorted(f"clips/{p.name}" for p in (other.out / "clips").iterdir()) == sorted(clips), name
        for path, frames in clips.items():
            theirs = decoded(other.out / path)
            assert len(theirs) == len(frames), (name, path)
            assert max(difference(a, b) for a, b in zip(frames, theirs, strict=True)) < TOLERANCE, (name, path)


def test_shared_frames_stay_bounded_while_the_run_goes_and_are_gone_after(media_runs: dict[str, Run]) -> None:
    """100 clips go through, and at no moment does the run's frames folder hold more segments than its
    channels and pools can hold items; once a run exits, its folder is gone (with or without a filter between
    its clip stages)."""
    seen = media_runs["none"].segments
    assert seen is not None and seen.samples > 0 and seen.peak > 0  # found while it held frames
    assert seen.peak <= ONE_STAGE_BOUND < len(MANY)
    assert seen.left == []
    between = media_runs["filter_between"]
    assert between.segments is not None and between.segments.samples > 0 and between.segments.left == []
    assert all(row["filtered_by"] == ["keep:min_duration_s"] for row in between.rows)  # `after` read none


def test_a_clip_dropped_between_two_clip_stages_frees_the_later_stage_frames(media_runs: dict[str, Run]) -> None:
    """Every clip is dropped by the filter between `first` and `after`: the frames cut for `after` are freed
    as each clip is dropped, so the folder holds no more than the channels and pools can hold."""
    seen = media_runs["filter_between"].segments
    assert seen is not None
    assert seen.peak <= FILTER_BETWEEN_BOUND < len(MANY)
