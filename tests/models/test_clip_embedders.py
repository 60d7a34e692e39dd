"""The perceptual-hash embedder finds re-encoded copies of a shot and tells distinct shots apart, run by real
workers in a real pipeline: TransNetV2 cuts the shots, `models.phash` hashes them in the `ocr` env.

The footage is three shots of moving shapes and text on one background, each its own video and encoded twice:
320x240 at a high bitrate and 160x120 at a low one. The embed stage is the one `examples/dedup.yaml` runs, and its
dedup threshold is the one tested here.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont

from models.phash import EMBEDDING_SIZE
from orchestrator.sample_video import SampleSpec, generate_sample
from tests.models.conftest import RunInEnv
from tests.orchestrator.pipeline.runs import ROOT, outputs, run

EXAMPLE = ROOT / "examples" / "dedup.yaml"
PHASH_MAX_DISTANCE = 10
"""The Hamming distance `examples/dedup.yaml` suggests for `method: phash`."""
BACKGROUND = (20, 40, 160)
"""Every shot's: what tells shots apart is what moves in them, not their colour."""
CAPTIONS = ("ALPHA", "BRAVO", "CHARLIE")
SHOT_FRAMES = 48
ENCODINGS = {"high": ((320, 240), 2_000_000), "low": ((160, 120), 15_000)}


def _draw(shot: int, progress: float) -> Image.Image:
    """Shot 0: a disc crossing the frame; 1: a bar falling; 2: two discs circling; each with its own caption."""
    image = Image.new("RGB", (320, 240), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if shot == 0:
        x = 20 + 220 * progress
        draw.ellipse([x, 90, x + 60, 150], fill=(250, 250, 250))
    elif shot == 1:
        y = 20 + 150 * progress
        draw.rectangle([130, y, 200, y + 50], fill=(30, 30, 30))
    else:
        for k, colour in enumerate(((200, 0, 0), (255, 255, 0))):
            angle = 2 * np.pi * (progress + k / 2)
            x, y = 160 + 80 * np.cos(angle), 120 + 60 * np.sin(angle)
            draw.ellipse([x - 25, y - 25, x + 25, y + 25], fill=colour)
    draw.text((100, 190), CAPTIONS[shot], fill=(255, 255, 255), font=ImageFont.load_default(size=28))
    return image


def _encode(path: Path, shot: int, size: tuple[int, int], bit_rate: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height = size
        stream.pix_fmt, stream.bit_rate = "yuv420p", bit_rate
        for index in range(SHOT_FRAMES):
            image = _draw(shot, index / SHOT_FRAMES).resize(size, Image.Resampling.BILINEAR)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")))
        container.mux(stream.encode())


def _example_stage(name: str) -> dict:
    return next(stage for stage in yaml.safe_load(EXAMPLE.read_text())["stages"] if stage["name"] == name)


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    """One video per (encoding, shot)."""
    folder = tmp_path_factory.mktemp("footage")
    videos = {(name, shot): folder / f"{name}-{shot}.mp4" for name in ENCODINGS for shot in range(len(CAPTIONS))}
    for (name, shot), path in videos.items():
        _encode(path, shot, *ENCODINGS[name])
    return videos


@pytest.fixture(scope="module")
def embedded(footage: dict[tuple[str, int], Path], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[tuple[str, int], dict]:
    """Each clip's row, by (encoding, shot), from one pipeline run over every shot in both encodings."""
    videos, folder = footage, tmp_path_factory.mktemp("embedders")
    config = folder / "pipeline.yaml"
    config.write_text(json.dumps({
        "inputs": [str(path) for path in videos.values()], "output": str(folder / "out"),
        "stages": [{"name": "shots", "split": "models.transnetv2.TransNetV2ShotDetector", "frames": {"size": [48, 27]}},
                   _example_stage("embed")]}))
    result = run(config)
    assert result.returncode == 0, result.stderr
    rows, _ = outputs(folder / "out")
    key_of = {str(path): key for key, path in videos.items()}
    assert sorted((key_of[row["video"]], row["start_frame"], row["end_frame"]) for row in rows) == sorted(
        (key, 0, SHOT_FRAMES - 1) for key in videos)
    return {key_of[row["video"]]: row for row in rows}


def _distance(a: dict, b: dict) -> int:
    return (int(a["embed"]["phash"], 16) ^ int(b["embed"]["phash"], 16)).bit_count()


def _cosine(a: dict, b: dict) -> float:
    return float(np.dot(a["embed"]["embedding"], b["embed"]["embedding"]))


def test_results_are_a_64_bit_hash_and_a_unit_vector(embedded: dict[tuple[str, int], dict]) -> None:
    for row in embedded.values():
        assert set(row["embed"]) == {"phash", "embedding"}
        assert len(row["embed"]["phash"]) == 16 and int(row["embed"]["phash"], 16) >= 0
        assert len(row["embed"]["embedding"]) == EMBEDDING_SIZE
        assert np.linalg.norm(row["embed"]["embedding"]) == pytest.approx(1.0, abs=1e-5)


def _matches(signal: str, a: dict, b: dict) -> bool:
    """Whether `signal` calls rows `a` and `b` copies, at the thresholds `examples/dedup.yaml` suggests."""
    if signal == "phash":
        return _distance(a, b) <= PHASH_MAX_DISTANCE
    return _cosine(a, b) >= _example_stage("dedup")["dedup"]["threshold"]


@pytest.mark.parametrize("signal", ["phash", "embedding"])
def test_a_reencoded_copy_matches_and_distinct_shots_do_not(
    embedded: dict[tuple[str, int], dict], signal: str
) -> None:
    for shot in range(len(CAPTIONS)):
        assert _matches(signal, embedded["high", shot], embedded["low", shot]), shot
    for (key_a, a), (key_b, b) in itertools.combinations(embedded.items(), 2):
        if key_a[1] != key_b[1]:
            assert not _matches(signal, a, b), (key_a, key_b)


_EMBED_EACH = """
import json, sys
import numpy as np
from models.phash import PerceptualHashEmbedder

model = PerceptualHashEmbedder()
model.setup()
clips = np.load(sys.argv[1])
results = {name: model({"frames": clips[name]}) for name in clips.files}
print(json.dumps({name: {"phash": r["phash"], "embedding": r["embedding"].tolist()} for name, r in results.items()}))
"""


def test_a_copy_sampled_at_other_instants_still_matches(
    footage: dict[tuple[str, int], Path], run_in_env: RunInEnv, tmp_path: Path
) -> None:
    """A copy's cuts may fall a frame or two apart: at the example's sampling rate, the high encoding's frames
    taken up to two frames later than the low one's still give a match, in the model's own env."""
    frames = _example_stage("embed")["frames"]
    step = round(24 / frames["rate"])
    clips = {}
    for (name, shot), path in footage.items():
        with av.open(str(path)) as container:
            decoded = [f.to_ndarray(width=frames["size"][0], height=frames["size"][1], format="rgb24")
                       for f in container.decode(video=0)]
        for offset in ([1, 2] if name == "high" else [0]):
            clips[f"{name}-{shot}-{offset}"] = np.stack(decoded[offset::step])
    np.savez(tmp_path / "clips.npz", **clips)
    results = json.loads(run_in_env("ocr", _EMBED_EACH, str(tmp_path / "clips.npz")))
    rows = {name: {"embed": result} for name, result in results.items()}
    for shot, offset in itertools.product(range(len(CAPTIONS)), [1, 2]):
        copy, original = rows[f"high-{shot}-{offset}"], rows[f"low-{shot}-0"]
        assert _matches("phash", copy, original) and _matches("embedding", copy, original), (shot, offset)


def test_the_bundled_samples_shots_which_share_a_layout_and_differ_in_colour_are_not_copies(
    run_in_env: RunInEnv, tmp_path: Path
) -> None:
    """The sample's five shots are each a vertical gradient with a disc, three with a caption box: in luma they
    are nearly one picture, so only the embedding's colour half tells them apart."""
    sample = tmp_path / "sample.mp4"
    shots = generate_sample(sample)  # the bundled sample, as `orchestrator.sample_video` makes it
    frames = _example_stage("embed")["frames"]
    with av.open(str(sample)) as container:
        decoded = [f.to_ndarray(width=frames["size"][0], height=frames["size"][1], format="rgb24")
                   for f in container.decode(video=0)]
    step = round(SampleSpec().fps / frames["rate"])
    clips = {f"shot-{k}": np.stack(decoded[s.start_frame:s.end_frame + 1:step]) for k, s in enumerate(shots)}
    np.savez(tmp_path / "clips.npz", **clips)
    rows = {name: {"embed": result}
            for name, result in json.loads(run_in_env("ocr", _EMBED_EACH, str(tmp_path / "clips.npz"))).items()}
    for (name_a, a), (name_b, b) in itertools.combinations(rows.items(), 2):
        assert not _matches("embedding", a, b), (name_a, name_b, _cosine(a, b))
