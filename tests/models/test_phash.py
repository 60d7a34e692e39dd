"""The perceptual-hash embedder finds re-encoded copies of a shot and tells distinct shots apart, run by real
workers in a real pipeline: TransNetV2 cuts the shots, `models.phash` hashes them in the `ocr` env.

The footage is three shots of moving shapes and text, encoded twice: 320x240 at a high bitrate and 160x120 at a
low one. The embed stage is the one `examples/dedup.yaml` runs, and its dedup threshold is the one tested here.
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
from tests.orchestrator.pipeline.runs import ROOT, outputs, run

EXAMPLE = ROOT / "examples" / "dedup.yaml"
PHASH_MAX_DISTANCE = 6
"""The Hamming distance `examples/dedup.yaml` suggests for `method: phash`."""
SHOTS = (((20, 40, 160), "ALPHA"), ((235, 140, 20), "BRAVO"), ((10, 110, 40), "CHARLIE"))
SHOT_FRAMES = 48
ENCODINGS = {"high": ((320, 240), 2_000_000), "low": ((160, 120), 60_000)}


def _draw(shot: int, progress: float) -> Image.Image:
    """Shot 0: a disc crossing the frame; 1: a bar falling; 2: two discs circling; each with its own caption."""
    background, caption = SHOTS[shot]
    image = Image.new("RGB", (320, 240), background)
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
    draw.text((100, 190), caption, fill=(255, 255, 255), font=ImageFont.load_default(size=28))
    return image


def _encode(path: Path, size: tuple[int, int], bit_rate: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height = size
        stream.pix_fmt, stream.bit_rate = "yuv420p", bit_rate
        for shot, index in itertools.product(range(len(SHOTS)), range(SHOT_FRAMES)):
            image = _draw(shot, index / SHOT_FRAMES).resize(size, Image.Resampling.BILINEAR)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")))
        container.mux(stream.encode())


def _example_stage(name: str) -> dict:
    return next(stage for stage in yaml.safe_load(EXAMPLE.read_text())["stages"] if stage["name"] == name)


@pytest.fixture(scope="module")
def hashed(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], dict]:
    """Each clip's `embed` result, by (encoding, shot), from one pipeline run over both encodings."""
    folder = tmp_path_factory.mktemp("phash")
    videos = {name: folder / f"{name}.mp4" for name in ENCODINGS}
    for name, (size, bit_rate) in ENCODINGS.items():
        _encode(videos[name], size, bit_rate)
    config = folder / "pipeline.yaml"
    config.write_text(json.dumps({
        "inputs": [str(path) for path in videos.values()], "output": str(folder / "out"),
        "stages": [{"name": "shots", "split": "models.transnetv2.TransNetV2ShotDetector", "frames": {"size": [48, 27]}},
                   _example_stage("embed")]}))
    result = run(config)
    assert result.returncode == 0, result.stderr
    rows, _ = outputs(folder / "out")
    encoding_of = {str(path): name for name, path in videos.items()}
    assert sorted((encoding_of[row["video"]], row["start_frame"]) for row in rows) == sorted(
        itertools.product(ENCODINGS, range(0, len(SHOTS) * SHOT_FRAMES, SHOT_FRAMES)))
    return {(encoding_of[row["video"]], row["start_frame"] // SHOT_FRAMES): row["embed"] for row in rows}


def _distance(a: dict, b: dict) -> int:
    return (int(a["phash"], 16) ^ int(b["phash"], 16)).bit_count()


def _cosine(a: dict, b: dict) -> float:
    return float(np.dot(a["embedding"], b["embedding"]))


def test_results_are_a_64_bit_hash_and_a_unit_vector(hashed: dict[tuple[str, int], dict]) -> None:
    for result in hashed.values():
        assert set(result) == {"phash", "embedding"}
        assert len(result["phash"]) == 16 and int(result["phash"], 16) >= 0
        assert len(result["embedding"]) == EMBEDDING_SIZE
        assert np.linalg.norm(result["embedding"]) == pytest.approx(1.0, abs=1e-5)


def test_a_reencoded_copy_matches_and_distinct_shots_do_not(hashed: dict[tuple[str, int], dict]) -> None:
    threshold = _example_stage("dedup")["dedup"]["threshold"]
    for shot in range(len(SHOTS)):
        high, low = hashed["high", shot], hashed["low", shot]
        assert _distance(high, low) <= PHASH_MAX_DISTANCE and _cosine(high, low) >= threshold, shot
    for (key_a, a), (key_b, b) in itertools.combinations(hashed.items(), 2):
        if key_a[1] != key_b[1]:
            assert _distance(a, b) > PHASH_MAX_DISTANCE and _cosine(a, b) < threshold, (key_a, key_b)
