"""Where a 1080p run's CPU goes, and how close its media work comes to bare PyAV, measured in one run.

    one generated 1920x1080 video (--seconds, 24 fps, known shots of distinct colours)
        ├─▶ execute(quickstart.yaml) ─▶ CPU seconds of this process (the orchestrator) over the whole
        │                               process tree's, and per process kind (each worker's --name)
        ├─▶ --videos copies of it ─▶ execute(the quickstart's stages with instant models, media: {replicas: 1})
        │       MeanCut split (a cut where the mean colour jumps) ─▶ ShapeOf on each clip stage's frames
        │       ─▶ clips/s after start-up, and cores used (process-tree CPU seconds / wall seconds)
        ├─▶ the same with media: {replicas: 2} ─▶ clips/s over replicas: 1's
        └─▶ bare PyAV, in this process, one thread: decode one copy, encode each true shot with libx264
                ─▶ clips/s (one core)

A media worker serves each video's requests in order (they carry the video as their affinity), so a second
replica of a media step helps only with a second video: the instant runs read --videos copies.

The instant models cost next to nothing, so the instant pipeline's clips/s is its media ceiling: the decode
for the split, the full-size decode, sampling and resizing each clip stage's frames, encoding every clip
(the filter keeps them all), and moving references between processes. Bare PyAV does only the decode and
the encode, with ClipEncoder's codec and settings (libx264 defaults, the source's time base), so
`RATIO media ceiling / bare PyAV` is the pipeline's clips per CPU second over bare PyAV's.

    .venv/bin/python bench/media.py [--seconds 45] [--videos 2] [--parts share,ceiling,replicas] [--encode kept]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from av.video.frame import PictureType
from pipeline import QUICKSTART, PipelineRun, Source, TreeUsage, make_source, progress, run_pipeline, scratch_dir

from orchestrator.pipeline.config import load_config
from orchestrator.sample_video import Shot
from orchestrator.supervisor.threads import available_cores

ECHO = Path(__file__).resolve().parent / "echo_models.py"
SIZE = (1920, 1080)
PARTS = ("share", "ceiling", "replicas")
THREADS_SHOWN = 10


# --- the pipeline -------------------------------------------------------------------------------
def instant_config(folder: Path, media_replicas: int, encode: str) -> Path:
    """The quickstart's stages and frames with instant models, one replica each: MeanCut splits, ShapeOf
    answers each clip stage, and the filter keeps only its duration rule (ShapeOf scores nothing), so every
    shot is kept. The media workers stay on the CPU (`hardware: off`), as bare PyAV does; `encode` is
    `clips: {encode}` (kept: a third full decode after the filters; all: the cut step encodes as it reads)."""
    quickstart, _ = load_config(QUICKSTART)
    stages: list[dict[str, Any]] = []
    for stage in quickstart.streaming.stages:
        data = stage.model_dump(mode="json", exclude_defaults=True, include={"name", "frames", "batch_size"})
        if stage.split or stage.model:
            env = "video_splitting" if stage.split else "ocr"
            kind, model = ("split", "MeanCut") if stage.split else ("model", "ShapeOf")
            data.update({kind: f"{ECHO}:{model}", "env": env, "params": {"conda_env_name": env}})
        elif stage.filter:
            data["filter"] = {"min_duration_s": stage.filter.min_duration_s}
        stages.append(data)
    config = {"inputs": ["unused"], "output": "unused", "stages": stages,
              "media": {"replicas": media_replicas, "hardware": "off"}, "clips": {"encode": encode}}
    path = folder / f"instant-media{media_replicas}.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path


def checked(run: PipelineRun, what: str) -> PipelineRun:
    """The run, if it wrote one clip per true shot and failed nothing."""
    failures = run.summary["failures"]
    if run.clips != run.source.clips or failures:
        raise RuntimeError(f"{what}: {run.clips} clips of {run.source.clips} true shots, "
                           f"{len(failures)} failures ({failures[:1]})")
    return run


def after_startup(run: PipelineRun) -> tuple[float, float]:
    """(clips/s, cores used) after start-up: the process tree's CPU seconds over the wall seconds."""
    _, cpu_s = run.usage.cpu_since(run.ready_at)
    return run.clips / run.run_s, cpu_s / run.run_s


# --- bare PyAV ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bare:
    clips: int
    wall_s: float
    cpu_s: float

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.wall_s


def bare_pyav(path: Path, shots: tuple[Shot, ...], out_dir: Path) -> Bare:
    """Decode `path` and encode each shot's decoded frames to its own mp4, one thread for both."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu_at, started = time.process_time(), time.perf_counter()
    ends = iter(shots)
    shot: Shot | None = next(ends)
    with av.open(str(path)) as source:
        stream = source.streams.video[0]
        stream.codec_context.thread_count = 1
        clip: Any = None
        for index, frame in enumerate(source.decode(stream)):
            if clip is None:
                clip = _open_clip(out_dir / f"{index:06d}.mp4", stream, frame.pts)
            frame.pts -= clip.first_pts
            frame.pict_type = PictureType.NONE  # the encoder picks its own frame types, as for a new frame
            clip.container.mux(clip.stream.encode(frame))
            if shot is not None and index == shot.end_frame:
                clip.close()
                clip, shot = None, next(ends, None)
        if clip is not None:
            clip.close()
    return Bare(len(shots), time.perf_counter() - started, time.process_time() - cpu_at)


@dataclass
class _Clip:
    container: Any
    stream: Any
    first_pts: int

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


def _open_clip(path: Path, source: Any, first_pts: int) -> _Clip:
    container = av.open(str(path), mode="w", format="mp4")
    stream = container.add_stream("libx264", rate=source.average_rate)
    stream.width, stream.height, stream.pix_fmt = source.width, source.height, "yuv420p"
    stream.codec_context.time_base = stream.time_base = source.time_base
    stream.codec_context.thread_count = 1
    return _Clip(container, stream, first_pts)


# --- report -------------------------------------------------------------------------------------
def cpu_table(title: str, usage: TreeUsage) -> None:
    """CPU seconds per process kind: this process, then each worker label's stage (replicas together)."""
    kinds: dict[str, list[float]] = {}
    for label, seconds in usage.by_label().items():
        kinds.setdefault(label.split("/")[0], []).extend(seconds)
    rows = [("orchestrator (this process)", 1, usage.parent_cpu_s)]
    rows += sorted(((kind, len(s), sum(s)) for kind, s in kinds.items()), key=lambda r: -r[2])
    rows.append(("exited between samples (not attributed)", 0, usage.unattributed_s))
    total = usage.tree_cpu_s
    print(f"where the time goes, {title}: CPU seconds of the whole run, start-up included")
    print(f"  {'process kind':<46}{'processes':>10}{'CPU s':>10}{'share':>8}")
    for name, processes, seconds in rows:
        print(f"  {name:<46}{processes or '':>10}{seconds:>10.1f}{seconds / max(total, 1e-9):>8.0%}")
    print(f"  {'process tree':<46}{'':>10}{total:>10.1f}")
    print()


def report_share(run: PipelineRun) -> None:
    usage = run.usage
    cpu_table(f"quickstart at 1080p ({run.source.describe()}, {run.clips} clips, {run.wall_s:.1f} s wall)", usage)
    threads = sorted(usage.by_thread().items(), key=lambda item: -item[1])
    print("the orchestrator's CPU seconds by thread: " + ", ".join(f"{name} {cpu_s:.1f}" for name, cpu_s in
                                                                 threads[:THREADS_SHOWN] if cpu_s >= 0.05))
    parent_s, tree_s = usage.cpu_since(run.ready_at)
    print(f"after start-up ({run.startup_s:.1f} s) alone: the orchestrator {parent_s:.1f} of {tree_s:.1f} CPU s = "
          f"{parent_s / max(tree_s, 1e-9):.3f}")
    print(f"RATIO orchestrator CPU share at 1080p = {usage.parent_cpu_s / usage.tree_cpu_s:.3f}   (target <= 0.05)")


def report_ceiling(one: PipelineRun, bare: Bare) -> None:
    cpu_table(f"instant models at 1080p, media replicas 1 ({one.clips} clips)", one.usage)
    clips_s, cores = after_startup(one)
    bare_cores = bare.cpu_s / bare.wall_s
    print(f"instant pipeline: {clips_s:.3f} clips/s on {cores:.2f} cores = {clips_s / cores:.3f} clips/s per core "
          f"(after start-up, {one.startup_s:.1f} s)")
    print(f"bare PyAV (decode + libx264, one thread): {bare.clips_per_s:.3f} clips/s on {bare_cores:.2f} cores "
          f"({bare.clips} clips in {bare.wall_s:.1f} s)")
    print(f"RATIO media ceiling / bare PyAV = {clips_s / cores / (bare.clips_per_s / bare_cores):.2f} per core   "
          f"(target >= 0.8)")


def report_replicas(one: PipelineRun, two: PipelineRun) -> None:
    (one_s, one_cores), (two_s, two_cores) = after_startup(one), after_startup(two)
    print(f"media replicas 1: {one_s:.3f} clips/s on {one_cores:.2f} cores; 2: {two_s:.3f} clips/s on "
          f"{two_cores:.2f} cores")
    cores = available_cores()
    print(f"RATIO two media replicas / one = {two_s / one_s:.2f}   (target >= 1.6; bounded by the cores: {cores} "
          f"here, shared with the model workers{', so two replicas cannot double' if cores <= 2 else ''})")


def run(seconds: float, videos: int, parts: set[str], encode: str) -> None:
    load_before = os.getloadavg()[0]
    with scratch_dir() as scratch:
        progress(f"generating {seconds:g} s of {SIZE[0]}x{SIZE[1]}")
        source = make_source(scratch / "input", seconds / 60, videos, SIZE)
        one_video = dataclasses.replace(source, paths=source.paths[:1])
        print(f"input: {one_video.describe()} at {SIZE[0]}x{SIZE[1]} = {one_video.frames} frames, "
              f"{one_video.clips} true shots (the instant runs: {videos} copies, clips: {{encode: {encode}}}); "
              f"{os.cpu_count()} CPUs "
              f"({available_cores()} for the run)")
        print()
        if "share" in parts:
            progress("the quickstart pipeline")
            report_share(checked(run_pipeline(one_video, scratch / "out-quickstart"), "the quickstart"))
            print()
        one = None
        if parts & {"ceiling", "replicas"}:
            progress("the instant pipeline, media replicas 1")
            one = instant_run(source, scratch, 1, encode)
        if "ceiling" in parts and one is not None:
            progress("bare PyAV")
            report_ceiling(one, bare_pyav(source.paths[0], source.shots, scratch / "out-bare"))
            print()
        if "replicas" in parts and one is not None:
            progress("the instant pipeline, media replicas 2")
            report_replicas(one, instant_run(source, scratch, 2, encode))
    print(f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other work skews every number)")


def instant_run(source: Source, scratch: Path, media_replicas: int, encode: str) -> PipelineRun:
    config = instant_config(scratch, media_replicas, encode)
    return checked(run_pipeline(source, scratch / f"out-instant-{media_replicas}", config), "the instant pipeline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=45.0, help="length of the 1080p input (default 45)")
    parser.add_argument("--videos", type=int, default=2,
                        help="copies of the input the instant runs read (default 2; at least 2 for two media "
                             "replicas to have a video each)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"which measurements, comma-separated (default {','.join(PARTS)})")
    parser.add_argument("--encode", choices=("kept", "all"), default="kept",
                        help="clips: {encode} of the instant runs (default kept, the pipeline's default)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        parser.error(f"--parts: unknown {sorted(parts - set(PARTS))}; choose from {', '.join(PARTS)}")
    if args.seconds < 3:
        parser.error("--seconds must be at least 3")
    if args.videos < 1:
        parser.error("--videos must be at least 1")
    try:
        run(args.seconds, args.videos, parts, args.encode)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
