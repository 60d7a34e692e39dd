"""Config validation and video input handling: every bad input gets one line naming what and where."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from orchestrator.errors import ConfigError
from orchestrator.pipeline.config import load_config
from orchestrator.pipeline.media.video import VideoError, expand_inputs, sample_indices, video_id
from orchestrator.sample_video import SampleSpec, generate_sample
from workers.media.video import iter_frames

GOOD = """\
inputs: [a.mp4]
output: out
stages:
  - {name: shots, split: models.transnetv2.TransNetV2ShotDetector, frames: {size: [48, 27]}}
  - {name: ocr, model: models.rapidocr.RapidOCRTextReader, replicas: 2, frames: {sampling: one_per_clip}}
  - {name: keep, filter: {min_duration_s: 1.0, max: {content.unsafe_score: 0.5}}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_good_config_and_command_line_overrides(tmp_path: Path) -> None:
    config, base = load_config(write(tmp_path, GOOD), inputs=["x.mp4", "dir/"], output="elsewhere")
    assert base == tmp_path
    assert config.inputs == [str(Path.cwd() / "x.mp4"), str(Path.cwd() / "dir")]
    assert config.output == str(Path.cwd() / "elsewhere")
    assert [s.name for s in config.stages] == ["shots", "ocr", "keep"]
    assert config.stages[1].replicas == 2 and config.stages[1].frames.sampling == "one_per_clip"


def test_replicas_auto_starts_at_one_and_grows_to_max_replicas(tmp_path: Path) -> None:
    config, _ = load_config(write(tmp_path, GOOD.replace("replicas: 2", "replicas: auto, max_replicas: 3")))
    ocr = config.stages[1]
    assert ocr.auto_replicas and (ocr.start_replicas, ocr.most_replicas) == (1, 3)
    assert (config.stages[0].start_replicas, config.stages[0].most_replicas, config.stages[0].auto_replicas) == \
        (1, 1, False)
    config, _ = load_config(write(tmp_path, GOOD.replace("replicas: 2", "replicas: auto")))
    assert config.stages[1].most_replicas == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("replicas: 2", "replicas: 0"),
         r"line 5: stage 'ocr': field 'replicas': must be a whole number, at least 1, or auto \(got 0\)"),
        (GOOD.replace("replicas: 2", "replicas: many"), r"stage 'ocr': field 'replicas': .* or auto \(got 'many'\)"),
        (GOOD.replace("replicas: 2", "replicas: 2, max_replicas: 3"),
         r"stage 'ocr': max_replicas applies to replicas: auto \(replicas is 2\)"),
        (GOOD.replace("replicas: 2", "replicas: auto, max_replicas: 0"),
         r"stage 'ocr': field 'max_replicas': must be >= 1 \(got 0\)"),
        (GOOD.replace("one_per_clip", "sometimes"),
         r"stage 'ocr': field 'frames.sampling': must be one of every_frame, per_second"),
        (GOOD.replace("min_duration_s", "min_length"),
         r"line 6: stage 'keep': unknown field 'filter.min_length' \(filter's fields: absent, max,"),
        (GOOD.replace("split:", "model:"), r"the first stage, and only the first, must be a 'split' stage"),
        (GOOD.replace("name: ocr", "name: shots"), r"stage names must be unique"),
        (GOOD.replace("model: models.rapidocr", "filter: {}, model: models.rapidocr"), r"exactly one of split"),
        ("inputs: [a\noutput: b\n", r"config.yaml: line 2 is not valid YAML"),
        ("- a list", r"expected a mapping with inputs, output and stages"),
        (GOOD.replace("inputs: [a.mp4]", "inputs: []"),
         r"line 1: field 'inputs': takes at least 1 item\(s\) \(got \[\]\)"),
    ],
)
def test_bad_config_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(write(tmp_path, text))
    assert str(tmp_path / "config.yaml") in str(raised.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read the config"):
        load_config(tmp_path / "nope.yaml")


def test_inputs_expand_files_folders_and_globs(tmp_path: Path) -> None:
    for name in ("a/one.mp4", "a/b/two.mov", "c/one.mp4", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    videos, missing = expand_inputs(["a", "c/*.mp4", "gone.mp4", "a/one.mp4"], tmp_path)
    assert [v.path.relative_to(tmp_path).as_posix() for v in videos] == ["a/b/two.mov", "a/one.mp4", "c/one.mp4"]
    ids = [v.video_id for v in videos]
    assert ids[0].startswith("b_two-") and ids[1].startswith("a_one-") and ids[2].startswith("c_one-")
    assert expand_inputs(["a/one.mp4"], tmp_path)[0][0].video_id == ids[1]  # whatever else the run reads
    assert missing == [("gone.mp4", f"no such file, folder or glob match: {tmp_path / 'gone.mp4'}")]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "s.mp4"
    generate_sample(path, SampleSpec(shots=((12, None), (12, "HI"))))
    return path


def test_decode_and_resize(sample: Path) -> None:
    frames = list(iter_frames(sample, (48, 27)))
    assert len(frames) == 24 and frames[0].shape == (27, 48, 3) and frames[0].dtype == np.uint8


@pytest.mark.parametrize("name", [".incoming/a.mp4", "_tmp/.a.mp4", "..x/_b.mp4"])
def test_a_video_id_never_starts_with_a_dot_or_underscore(tmp_path: Path, name: str) -> None:
    """Its clip-table part is `<video id>.parquet`, and Parquet readers skip files named so in a folder."""
    assert video_id(tmp_path / name)[0] not in "._"


def test_truncated_video_is_reported(sample: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(sample.read_bytes()[: len(sample.read_bytes()) // 3])
    with pytest.raises(VideoError, match=r"broken.mp4: (not a readable video|corrupt or truncated|has no deco)"):
        list(iter_frames(broken))


def test_not_a_video_and_no_video_stream(tmp_path: Path) -> None:
    text = tmp_path / "text.mp4"
    text.write_text("hello")
    with pytest.raises(VideoError, match=r"text.mp4: not a readable video"):
        list(iter_frames(text))
    audio = tmp_path / "audio.mp4"
    with av.open(str(audio), mode="w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(VideoError, match=r"audio.mp4: has no video stream"):
        list(iter_frames(audio))


def test_zero_length_video(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoError, match=r"empty.mp4: (has no decodable frames|has no video stream|not a readable)"):
        list(iter_frames(empty))


def test_sampling() -> None:
    assert sample_indices(10, 13, 24, "every_frame", 1) == [10, 11, 12, 13]
    assert sample_indices(10, 20, 24, "one_per_clip", 1) == [15]
    assert sample_indices(0, 47, 24, "per_second", 1) == [0, 24]
    assert sample_indices(0, 47, 24, "per_second", 4) == [0, 6, 12, 18, 24, 30, 36, 42]
    assert sample_indices(5, 6, 24, "per_second", 0.5) == [5]
    assert sample_indices(0, 9, 24, "every_frame", 1, max_frames=4) == [0, 3, 6, 9]
    assert sample_indices(0, 7199, 24, "every_frame", 1, max_frames=256)[::85] == [0, 2400, 4799, 7199]
    assert len(sample_indices(0, 7199, 24, "every_frame", 1, max_frames=256)) == 256
    assert sample_indices(0, 9, 24, "every_frame", 1, max_frames=1) == [5]
