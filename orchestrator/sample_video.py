"""The bundled sample video for the quickstart, and its ground truth.

The clip is made so that every stage of the demo pipeline has a known right answer:

    shots (n_frames, text) --> frames (numpy RGB) --> OUT.mp4        (H.264, yuv420p)
                          \\--> ground truth -------> OUT.truth.json (shot spans + on-screen text)

Each shot has its own strongly different background and a slowly moving disc, so a shot-boundary
detector sees hard cuts exactly at shot starts and only there. Text shots carry one large, centred
line in black on a light box, so an OCR model can read it. Everything is fixed (colours, motion,
the font bundled with Pillow, encoder settings), so the same arguments always give the same video.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Neighbouring entries differ strongly in hue and brightness, so every cut is a hard cut.
_BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (20, 40, 160),
    (235, 140, 20),
    (10, 110, 40),
    (240, 120, 200),
    (90, 20, 110),
    (200, 220, 40),
)
_CRF = 28
_GOP = 48


@dataclass(frozen=True)
class Shot:
    """One shot of the sample: an inclusive frame span and the text shown in it (None if none)."""

    start_frame: int
    end_frame: int
    text: str | None


@dataclass(frozen=True)
class SampleSpec:
    """What to draw: frame size, rate, and each shot as (n_frames, on-screen text or None)."""

    width: int = 320
    height: int = 240
    fps: int = 24
    shots: tuple[tuple[int, str | None], ...] = (
        (48, "HELLO WORLD"),
        (36, None),
        (60, "CURATION"),
        (30, None),
        (42, "OPEN SOURCE"),
    )


def _shot_spans(spec: SampleSpec) -> list[Shot]:
    """Lay the shots end to end from frame 0, so together they cover every frame once."""
    spans, start = [], 0
    for n_frames, text in spec.shots:
        spans.append(Shot(start, start + n_frames - 1, text))
        start += n_frames
    return spans


def _background(spec: SampleSpec, index: int) -> np.ndarray:
    """A vertical gradient from the shot's colour to half its brightness; fixed for the whole shot."""
    colour = np.array(_BACKGROUNDS[index % len(_BACKGROUNDS)], dtype=np.float32)
    shade = np.linspace(1.0, 0.5, spec.height, dtype=np.float32)[:, None, None]
    return np.broadcast_to(shade * colour, (spec.height, spec.width, 3)).astype(np.uint8)


def _font_that_fits(text: str, max_width: int, size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font at `size`, shrunk only if the line would not fit the frame."""
    font = ImageFont.load_default(size=size)
    while size > 8 and font.getlength(text) > max_width:
        size -= 2
        font = ImageFont.load_default(size=size)
    return font


def _draw_frame(spec: SampleSpec, background: np.ndarray, text: str | None, progress: float) -> np.ndarray:
    """One frame: the background, a disc drifting left to right as `progress` goes 0 -> 1, then the text."""
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    radius = spec.height // 8
    cx = round(radius + progress * (spec.width - 2 * radius))
    cy = spec.height // 4
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(250, 250, 250))
    if text is not None:
        pad = spec.height // 24
        font = _font_that_fits(text, spec.width - 4 * pad, spec.height // 6)
        centre = (spec.width // 2, spec.height * 5 // 8)
        left, top, right, bottom = draw.textbbox(centre, text, font=font, anchor="mm")
        draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=(245, 245, 235))
        draw.text(centre, text, font=font, fill=(0, 0, 0), anchor="mm")
    return np.asarray(image)


def _write_truth(path: Path, spec: SampleSpec, shots: list[Shot]) -> None:
    """Write the ground truth the quickstart checks its results against."""
    truth = {
        "fps": spec.fps,
        "width": spec.width,
        "height": spec.height,
        "n_frames": shots[-1].end_frame + 1 if shots else 0,
        "shots": [asdict(shot) for shot in shots],
    }
    path.write_text(json.dumps(truth, indent=2) + "\n")


def truth_path(video: Path) -> Path:
    """Where the ground truth of `video` lives: `<stem>.truth.json` beside it."""
    return video.with_name(f"{video.stem}.truth.json")


def generate_sample(path: Path, spec: SampleSpec = SampleSpec()) -> list[Shot]:
    """Write the sample H.264 mp4 to `path` and its ground truth beside it; return the shots.

    The same `spec` always yields the same decoded frames and the same truth file.
    """
    shots = _shot_spans(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        # one encoder thread: x264's output depends on its thread count, which follows the machine's cores
        stream.options = {"crf": str(_CRF), "g": str(_GOP), "threads": "1"}
        for index, shot in enumerate(shots):
            background = _background(spec, index)
            length = shot.end_frame - shot.start_frame + 1
            for offset in range(length):
                rgb = _draw_frame(spec, background, shot.text, offset / max(length - 1, 1))
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    _write_truth(truth_path(path), spec, shots)
    return shots


BUNDLED_SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sample" / "sample.mp4"
"""Where the quickstart config expects the sample; generated on first use (`ensure_bundled_sample`)."""


def ensure_bundled_sample(inputs: list[Path]) -> bool:
    """Generate the bundled sample if `inputs` name it and it does not exist yet; True if it was made."""
    if BUNDLED_SAMPLE.exists() or not any(path.resolve() == BUNDLED_SAMPLE for path in inputs):
        return False
    generate_sample(BUNDLED_SAMPLE)
    return True


def main() -> None:
    """Command line: `python -m orchestrator.sample_video OUT.mp4`."""
    parser = argparse.ArgumentParser(description="Write the quickstart sample video and its ground truth.")
    parser.add_argument("out", type=Path, help="where to write the mp4; the truth JSON goes beside it")
    out = parser.parse_args().out
    shots = generate_sample(out)
    print(f"wrote {out} ({len(shots)} shots) and {truth_path(out)}")


if __name__ == "__main__":
    main()
