"""The sample video decodes to exactly what its ground truth promises, the same way every time."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest

from orchestrator.sample_video import SampleSpec, Shot, generate_sample, truth_path
from tests.support.paths import ROOT

SPEC = SampleSpec()


def _decode(path: Path) -> tuple[list[np.ndarray], Fraction, tuple[int, int]]:
    """All frames as RGB arrays, plus the stream's average rate and (width, height)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, stream.average_rate, (stream.codec_context.width, stream.codec_context.height)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Shot]]:
    path = tmp_path_factory.mktemp("sample") / "sample.mp4"
    return path, generate_sample(path, SPEC)


@pytest.fixture(scope="module")
def frames(sample: tuple[Path, list[Shot]]) -> list[np.ndarray]:
    return _decode(sample[0])[0]


def test_stream_has_spec_size_rate_and_frame_count(sample: tuple[Path, list[Shot]]) -> None:
    path, _ = sample
    frames, rate, size = _decode(path)
    assert len(frames) == sum(n for n, _ in SPEC.shots)
    assert rate == SPEC.fps
    assert size == (SPEC.width, SPEC.height)
    assert frames[0].shape == (SPEC.height, SPEC.width, 3)
    assert path.stat().st_size < 1_000_000


def test_truth_matches_returned_shots_and_covers_every_frame(sample: tuple[Path, list[Shot]]) -> None:
    path, shots = sample
    truth = json.loads(truth_path(path).read_text())
    n_frames = sum(n for n, _ in SPEC.shots)
    assert (truth["fps"], truth["width"], truth["height"]) == (SPEC.fps, SPEC.width, SPEC.height)
    assert truth["n_frames"] == n_frames
    assert [Shot(**shot) for shot in truth["shots"]] == shots
    assert [shot.text for shot in shots] == [text for _, text in SPEC.shots]
    assert shots[0].start_frame == 0 and shots[-1].end_frame == n_frames - 1
    for before, after in pairwise(shots):
        assert after.start_frame == before.end_frame + 1


def test_frames_change_sharply_at_shot_starts_and_only_there(
    sample: tuple[Path, list[Shot]], frames: list[np.ndarray]
) -> None:
    _, shots = sample
    diffs = np.abs(np.diff(np.stack(frames).astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    cut_frames = {shot.start_frame for shot in shots[1:]}
    at_cuts = [d for i, d in enumerate(diffs, start=1) if i in cut_frames]
    within = [d for i, d in enumerate(diffs, start=1) if i not in cut_frames]
    assert len(at_cuts) == len(shots) - 1
    assert min(at_cuts) > 20
    assert max(within) < 5
    assert min(at_cuts) > 5 * max(within)


_GENERATE_AND_DIGEST = """
import hashlib, json, sys
from pathlib import Path
import av
from orchestrator.sample_video import generate_sample
path = Path(sys.argv[1])
shots = generate_sample(path)
digest = hashlib.sha256()
with av.open(str(path)) as container:
    for frame in container.decode(video=0):
        digest.update(frame.to_ndarray(format="rgb24").tobytes())
print(json.dumps({"frames": digest.hexdigest(), "shots": len(shots)}))
"""


def test_generation_is_deterministic(tmp_path: Path, sample: tuple[Path, list[Shot]]) -> None:
    """Two runs of the generator, each in a fresh process as two sessions or machines would run it, give the
    same decoded frames and the same truth file as each other and as this process's sample."""
    first_path, first_shots = sample
    made = []
    for name in ("one", "two"):
        path = tmp_path / name / "sample.mp4"
        done = subprocess.run([sys.executable, "-c", _GENERATE_AND_DIGEST, str(path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=True)
        made.append(json.loads(done.stdout))
        assert truth_path(path).read_text() == truth_path(first_path).read_text()
    assert made[0] == made[1] and made[0]["shots"] == len(first_shots)


def test_the_bundled_sample_is_generated_when_a_config_names_it(tmp_path: Path, monkeypatch) -> None:
    from orchestrator import sample_video

    bundled = tmp_path / "examples" / "sample" / "sample.mp4"
    monkeypatch.setattr(sample_video, "BUNDLED_SAMPLE", bundled)
    assert not sample_video.ensure_bundled_sample([tmp_path / "other.mp4"]) and not bundled.exists()
    assert sample_video.ensure_bundled_sample([tmp_path / "examples" / ".." / "examples" / "sample" / "sample.mp4"])
    assert bundled.exists() and sample_video.truth_path(bundled).exists()
    assert not sample_video.ensure_bundled_sample([bundled])
