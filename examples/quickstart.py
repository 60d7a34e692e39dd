"""Quickstart: three real models, each in its own env, over the bundled sample video.

    sample.mp4 ──PyAV──▶ 48x27 frames ──▶ TransNetV2 (video_splitting) ──▶ shots
                          middle frame of each shot ──▶ RapidOCR (ocr)            ──▶ metadata.jsonl
                                                   └──▶ NudeNet (content_filter)

Run: `python examples/quickstart.py [OUT_DIR]` (default: out/quickstart).
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path

import av
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from models.transnetv2 import INPUT_SIZE
from orchestrator.envs import EnvRegistry
from orchestrator.sample_video import generate_sample, truth_path
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.launch import make_runtime_dir

SAMPLE = Path(__file__).resolve().parent / "sample" / "sample.mp4"
MODELS = {
    "shots": ("models.transnetv2.TransNetV2ShotDetector", "video_splitting"),
    "ocr": ("models.rapidocr.RapidOCRTextReader", "ocr"),
    "content": ("models.nudenet.NudeNetContentFilter", "content_filter"),
}
console = Console(stderr=True)


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def shrink(frames: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize(INPUT_SIZE, Image.BILINEAR)) for f in frames])


def start_workers(stack: ExitStack) -> dict[str, WorkerHandle]:
    registry, runtime_dir = EnvRegistry(), make_runtime_dir()
    handles = {}
    for stage, (class_path, env_name) in MODELS.items():
        with console.status(f"starting {stage} in env {env_name}..."):
            handle = stack.enter_context(WorkerHandle(WorkerSpec(f"{stage}/0", registry.ensure(env_name),
                                                                 ModelRef(class_path)), runtime_dir))
            handle.start()
        handles[stage] = handle
        console.print(f"[green]✓[/] {stage}: {class_path} in {env_name} (python {handle.info['python']})")
    return handles


def run(out_dir: Path) -> list[dict]:
    if not SAMPLE.exists():
        generate_sample(SAMPLE)
    frames = decode(SAMPLE)
    rows = []
    with ExitStack() as stack:
        workers = start_workers(stack)
        scenes = workers["shots"].call({"frames": shrink(frames)})["scenes"]
        for index, (start, end) in enumerate(scenes):
            middle = frames[(start + end) // 2][None]
            rows.append({"video": str(SAMPLE.name), "clip_index": index, "start_frame": int(start),
                         "end_frame": int(end), "ocr": workers["ocr"].call({"frames": middle})["text"],
                         "unsafe_score": workers["content"].call({"frames": middle})["unsafe_score"]})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out/quickstart")
    rows = run(out_dir)
    truth = json.loads(truth_path(SAMPLE).read_text())["shots"]
    table = Table("clip", "frames", "true shot", "on-screen text", "unsafe score")
    for row, shot in zip(rows, truth + [None] * len(rows), strict=False):
        true = f"{shot['start_frame']}-{shot['end_frame']}" if shot else "-"
        table.add_row(str(row["clip_index"]), f"{row['start_frame']}-{row['end_frame']}", true, row["ocr"] or "-",
                      f"{row['unsafe_score']:.2f}")
    Console().print(table)
    console.print(f"wrote {out_dir / 'metadata.jsonl'}")


if __name__ == "__main__":
    main()
