"""Media that goes wrong mid-video, through `orchestrator run` with real decode and real workers: a split
window that fails while later ones are answered, a frame size that changes mid-stream, variable frame rate,
a truncated file. Each fails (or marks) its own video and the run goes on with the next."""

from __future__ import annotations

import json
import random
import shutil
from fractions import Fraction
from pathlib import Path

import av
import pytest

from orchestrator.pipeline.media.video import probe
from tests.orchestrator.pipeline.media import truncate, write_resizing, write_shots
from tests.orchestrator.pipeline.runs import FIXTURES, copy_controlled_model, outputs, run
from workers.media.video import ClipEncoder, Decoder

PIPELINE = """\
inputs: [{inputs}]
output: {output}
stages:
  - name: shots
    split: colour_splitter.ColourSplitter
    params: {params}
    replicas: 2
    max_attempts: 2
{size}  - name: stats
    model: controlled_model.ControlledModel
    params: {{env: ocr, returns: frame_stats}}
    frames: {{sampling: one_per_clip, size: [16, 12]}}
"""
RED, GREEN, BLUE, YELLOW, MAGENTA, CYAN = (200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), \
    (200, 40, 200), (40, 200, 200)
POISON, WHITE = (120, 120, 120), (250, 250, 250)


def write_pipeline(folder: Path, videos: list[Path], *, split_size: bool = True, min_duration_s: float = 0.0,
                   **params: object) -> tuple[Path, Path]:
    copy_controlled_model(folder)
    shutil.copy(FIXTURES / "colour_splitter.py", folder / "colour_splitter.py")
    config, out = folder / "pipeline.yaml", folder / "out"
    config.write_text(PIPELINE.format(inputs=", ".join(map(str, videos)), output=out,
                                      params=json.dumps({"env": "ocr", **params}),
                                      size="    frames: {size: [32, 24]}\n" if split_size else "")
                      + f"  - {{name: keep, filter: {{min_duration_s: {min_duration_s}}}}}\n")
    return config, out


def spans(shots: list[tuple[int, tuple[int, int, int]]]) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for n, _ in shots:
        bounds.append((start, start + n - 1))
        start += n
    return bounds


def rows_of(rows: list[dict], video: Path) -> list[dict]:
    return [r for r in rows if r["video"] == str(video)]


def poisoned_shots(rng: random.Random, window: int) -> list[tuple[int, tuple[int, int, int]]]:
    """Shots of random lengths over 250 frames, with a short poison shot inside the core of `window`
    (40 frames each: ColourSplitter's step 10 times the 4 steps a request holds)."""
    shots, frame, palette = [], 0, [RED, GREEN, BLUE, YELLOW, MAGENTA, CYAN]
    poison_at = 40 * window + rng.randrange(4, 24)
    while frame < 250:
        if frame == poison_at:
            shots.append((8, POISON))
        else:  # at least 12 frames: a shot of one frame would read as a transition, not a scene
            limit = poison_at if frame < poison_at else 250
            n = rng.randrange(12, 36)
            shots.append((n if limit - frame - n >= 12 else limit - frame, palette[len(shots) % len(palette)]))
        frame += shots[-1][0]
    return shots


@pytest.mark.parametrize(("how", "seed"), [("exception", 1), ("exception", 2), ("exception", 3), ("sigkill", 4)])
def test_a_failed_split_window_fails_its_video_while_later_windows_are_answered(tmp_path: Path, how: str,
                                                                               seed: int) -> None:
    """A window (chosen at random) shows the poison colour and fails a second after it is sent (after its
    retries, for a worker killed on it), while the other replica answers the windows after it."""
    rng = random.Random(seed)
    window = rng.randrange(1, 5)
    shots = poisoned_shots(rng, window)
    poisoned, clean = tmp_path / "poisoned.mp4", tmp_path / "clean.mp4"
    write_shots(poisoned, shots)
    write_shots(clean, [(n, WHITE if colour == POISON else colour) for n, colour in shots])
    config, out = write_pipeline(tmp_path, [poisoned, clean], fail_on=list(POISON), how=how, fail_after_s=1.0)
    result = run(config)
    assert result.returncode == 1, result.stderr[-3000:]
    rows, summary = outputs(out)
    # only the scenes that closed before the failed window; nothing stitched across the gap it left
    before = [span for span in spans(shots) if span[1] < 40 * window]
    assert before, "no scene closes before the failed window; the check below would prove nothing"
    assert [(r["start_frame"], r["end_frame"]) for r in rows_of(rows, poisoned)] == before
    assert all(r["path"] is not None for r in rows_of(rows, poisoned))
    failed = [f for f in summary["failures"] if f["video"] == str(poisoned)]
    assert len(failed) == 1 and "stage 'shots'" in failed[0]["reason"]
    assert ("controlled failure" if how == "exception" else "failed on 2 attempts") in failed[0]["reason"]
    clean_rows = rows_of(rows, clean)
    assert [(r["start_frame"], r["end_frame"]) for r in clean_rows] == spans(shots)
    assert all(r["path"] and r["filtered_by"] is None and r["stats"]["n"] == 1 for r in clean_rows)
    assert summary["videos_done"] == 2
    kept = sorted(r["path"] for r in rows if r["path"])
    assert sorted(f"clips/{p.name}" for p in (out / "clips").iterdir()) == kept


def test_a_frame_size_change_mid_stream_fails_that_video_and_the_run_goes_on(tmp_path: Path) -> None:
    """A split stage that reads frames at their own size (no `frames.size`) cannot window them: that video
    fails alone, keeping the scene that closed in the window read before the change (frames 0-40). Given a
    size, the video is cut whole, each clip at the size of its first frame."""
    resizing, clean = tmp_path / "resizing.ts", tmp_path / "clean.mp4"
    write_resizing(resizing, [(30, RED), (20, GREEN)], [(30, BLUE)], ((64, 48), (32, 24)))
    shots = [(30, RED), (30, BLUE)]
    write_shots(clean, shots)
    config, out = write_pipeline(tmp_path, [resizing, clean], split_size=False)
    result = run(config)
    assert result.returncode == 1, result.stderr[-3000:]
    rows, summary = outputs(out)
    assert summary["failures"] == [{"video": str(resizing), "reason": f"{resizing}: the frame size changes from "
                                    "64x48 to 32x24 at frame 50; give the split stage frames: {size: [64, 48]}, or "
                                    "re-encode the video at one size", "clip_index": None, "stage": None}]
    assert [(r["start_frame"], r["end_frame"]) for r in rows_of(rows, resizing)] == [(0, 29)]
    assert [(r["start_frame"], r["end_frame"]) for r in rows_of(rows, clean)] == spans(shots)
    assert summary["videos_done"] == 2

    config, out = write_pipeline(tmp_path, [resizing], split_size=True)
    result = run(config, "--fresh")
    assert result.returncode == 0, result.stderr[-3000:]
    rows, _ = outputs(out)
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(0, 29), (30, 49), (50, 79)]
    for row, size in zip(rows, [(64, 48), (64, 48), (32, 24)], strict=True):
        with av.open(str(out / row["path"])) as clip:
            stream = clip.streams.video[0]
            assert (stream.codec_context.width, stream.codec_context.height) == size
            assert sum(1 for _ in clip.decode(stream)) == row["end_frame"] - row["start_frame"] + 1


def test_variable_frame_rate_clips_keep_the_frames_own_timestamps(tmp_path: Path) -> None:
    """Frames 20 ms apart, then 55 ms, then alternating 30 and 50 ms: rows give the frames' own times, the
    duration filter keeps what lasts long enough (not what has enough frames at the average rate), and each
    clip file shows its frames when the source did, for as long as its scene lasts."""
    shots = [(30, RED), (20, GREEN), (40, BLUE)]
    gaps = [20] * 30 + [55] * 20 + [30, 50] * 20
    stamps = [sum(gaps[:i]) for i in range(len(gaps))]
    video = tmp_path / "vfr.mp4"
    write_shots(video, shots, pts=stamps, time_base=Fraction(1, 1000))
    with av.open(str(video)) as container:
        decoded = list(container.decode(video=0))
        last_end = float((decoded[-1].pts + decoded[-1].duration) * decoded[-1].time_base)
    config, out = write_pipeline(tmp_path, [video], min_duration_s=0.7)
    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    rows, _ = outputs(out)
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == spans(shots)
    times = [s / 1000 for s in stamps] + [last_end]
    assert [(r["start_s"], r["end_s"]) for r in rows] == \
        [(round(times[a], 3), round(times[b + 1], 3)) for a, b in spans(shots)]
    # 30 frames in 0.6 s, 20 in 1.1 s: at the average rate (27 frames/s) it would be the other way round
    assert [r["filtered_by"] for r in rows] == [["keep:min_duration_s"], None, None]
    for row in rows[1:]:
        with av.open(str(out / row["path"])) as clip:
            stream = clip.streams.video[0]
            shown = [float(frame.time) for frame in clip.decode(stream)]
            assert float(stream.duration * stream.time_base) == pytest.approx(row["end_s"] - row["start_s"],
                                                                               abs=0.002)
        source = times[row["start_frame"]: row["end_frame"] + 1]
        assert shown == pytest.approx([t - source[0] for t in source], abs=0.002)


def test_a_truncated_file_is_marked_and_fails_under_strict(tmp_path: Path) -> None:
    """A faststart mp4 (index first) cut to 60%: its index declares 200 frames, fewer decode, without an
    error (the packet cut off is skipped, whatever the decoder's thread count)."""
    whole, truncated, clean = tmp_path / "whole.mp4", tmp_path / "truncated.mp4", tmp_path / "clean.mp4"
    shots = [(40, RED), (100, BLUE), (60, GREEN)]
    write_shots(whole, shots, options={"movflags": "faststart"})
    truncate(whole, truncated, 0.6)
    write_shots(clean, shots)
    config, out = write_pipeline(tmp_path, [truncated, clean])
    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(out)
    # how many frames of the damaged tail FFmpeg's frame threads give up depends on their number
    decoded = rows_of(rows, truncated)[0]["truncated"]["decoded_frames"]
    assert 40 < decoded < 140 and decoded in {sum(1 for _ in Decoder(truncated, threads=n)) for n in (1, 2, 3, 4)}
    note = {"decoded_frames": decoded, "declared_frames": 200, "decoded_s": pytest.approx(decoded / 24, abs=0.2),
            "declared_s": pytest.approx(200 / 24, abs=0.05)}
    assert [(r["start_frame"], r["end_frame"]) for r in rows_of(rows, truncated)] == [(0, 39), (40, decoded - 1)]
    assert all(r["truncated"] == note and r["path"] for r in rows_of(rows, truncated))
    assert all(r["truncated"] is None for r in rows_of(rows, clean))
    assert summary["warnings"] == [{"video": str(truncated), "truncated": note}]
    assert summary["failures"] == []
    decoded_s = summary["warnings"][0]["truncated"]["decoded_s"]

    config.write_text(config.read_text().replace("stages:\n", "strict: true\nstages:\n"))
    result = run(config, "--fresh")
    assert result.returncode == 1, result.stderr[-3000:]
    rows, summary = outputs(out)
    [failure] = summary["failures"]
    assert failure["video"] == str(truncated)
    assert failure["reason"] == (f"{truncated}: decoded {decoded} frames ({decoded_s:.3f} s) of the 200 frames "
                                 "(8.333 s) its container declares: the file is truncated or damaged (strict: true "
                                 "fails such a video)")
    assert [(r["start_frame"], r["end_frame"]) for r in rows_of(rows, clean)] == spans(shots)


@pytest.mark.parametrize("rate", [None, 25.0, 60.0])
def test_a_clip_file_lasts_from_its_first_frame_to_where_its_scene_ends(tmp_path: Path, rate: float | None) -> None:
    """Whatever rate the encoder is told (the video's average by default), the clip's frames keep their
    gaps and the file ends where the scene does, B-frames (x264's default) included."""
    video = tmp_path / "vfr.mp4"
    gaps = [20] * 10 + [55] * 10 + [30, 50] * 10
    write_shots(video, [(len(gaps), RED)], pts=[sum(gaps[:i]) for i in range(len(gaps))],
                time_base=Fraction(1, 1000))
    frames = list(Decoder(video))
    for start, end in [(0, 10), (5, 20), (10, 20), (20, 39), (25, 26)]:
        encoder = ClipEncoder(tmp_path / "clip.mp4", frames[0].time_base, rate or probe(video).fps, 64, 48)
        for frame in frames[start:end]:
            encoder.write_frame(frame.av_frame, frame.pts - frames[start].pts)
        encoder.close(frames[end].pts - frames[start].pts)
        with av.open(str(tmp_path / "clip.mp4")) as clip:
            stream = clip.streams.video[0]
            shown = [float(frame.time) for frame in clip.decode(stream)]
            lasts = float(stream.duration * stream.time_base)
        assert lasts == pytest.approx(frames[end].time_s - frames[start].time_s, abs=0.001), (start, end)
        assert shown == pytest.approx([f.time_s - frames[start].time_s for f in frames[start:end]], abs=0.001)
