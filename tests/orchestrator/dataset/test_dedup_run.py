"""The dedup stage through `orchestrator run` with real decode and real workers: two inputs that are the same
footage at different sizes leave one set of clips, distinct shots are all kept, and a later run into the same
folder dedups its clips against the clips the first one kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.orchestrator.pipeline.media import write_shots
from tests.orchestrator.pipeline.runs import FIXTURES, outputs, run

RED, GREEN, BLUE, YELLOW, MAGENTA, CYAN = (200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), \
    (200, 40, 200), (40, 200, 200)
PIPELINE = """\
inputs: [{inputs}]
output: out
stages:
  - {{name: shots, split: colour_splitter.ColourSplitter, params: {{env: ocr}}, frames: {{size: [32, 24]}}}}
  - name: vec
    model: frame_vector.FrameVector
    params: {{env: ocr}}
    frames: {{sampling: per_second, rate: 4, size: [32, 24]}}
  - {{name: dedup, dedup: {{column: vec.embedding, method: semantic, threshold: 0.99, batch_videos: 2}}}}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dedup-run")
    for name in ("frame_vector.py", "colour_splitter.py"):
        shutil.copy(FIXTURES / name, folder / name)
    write_shots(folder / "a.mp4", [(30, RED), (30, GREEN), (30, BLUE)])
    write_shots(folder / "b.mp4", [(30, RED), (30, GREEN), (30, BLUE)], size=(96, 72))  # a, re-encoded larger
    write_shots(folder / "c.mp4", [(30, YELLOW), (30, MAGENTA), (30, CYAN)])
    write_shots(folder / "d.mp4", [(30, BLUE), (30, YELLOW)], size=(80, 60))  # a shot of a's and one of c's
    return folder


def pipeline(folder: Path, name: str, inputs: list[str]) -> Path:
    config = folder / f"{name}.yaml"
    config.write_text(PIPELINE.format(inputs=", ".join(inputs)))
    return config


def by_video(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(Path(row["video"]).stem, []).append(row)
    return grouped


def assert_folder_holds_exactly_the_kept_clips(out: Path, rows: list[dict]) -> None:
    kept = {row["path"] for row in rows if row["path"]}
    assert {f"clips/{p.name}" for p in (out / "clips").iterdir()} == kept
    parts = [row for p in sorted((out / ".parts").glob("*.json")) if p.name != "pipeline.json"
             for row in json.loads(p.read_text())["rows"]]
    assert sorted(map(json.dumps, parts)) == sorted(map(json.dumps, rows))


def test_the_same_footage_twice_in_one_run_keeps_one_copy_and_a_later_run_dedups_against_it(folder: Path) -> None:
    done = run(pipeline(folder, "first", ["a.mp4", "b.mp4", "c.mp4"]))
    assert done.returncode == 0, done.stderr
    rows, summary = outputs(folder / "out")
    videos = by_video(rows)
    a_ids = [Path(r["path"]).stem for r in videos["a"]]
    assert all(r["path"] for r in videos["a"] + videos["c"])  # distinct shots, all kept
    assert [(r["duplicate_of"], r["path"], r["filtered_by"]) for r in videos["b"]] == [
        (clip, None, ["dedup"]) for clip in a_ids]
    assert summary["kept"] == 6
    assert_folder_holds_exactly_the_kept_clips(folder / "out", rows)

    again = run(pipeline(folder, "second", ["d.mp4"]))
    assert again.returncode == 0, again.stderr
    later, summary = outputs(folder / "out")
    assert [(r["duplicate_of"], r["path"]) for r in by_video(later)["d"]] == [
        (a_ids[2], None), (Path(videos["c"][0]["path"]).stem, None)]
    assert summary["kept"] == 0
    assert sorted(map(json.dumps, [r for r in later if Path(r["video"]).stem != "d"])) == sorted(
        map(json.dumps, rows))  # the first run's rows are untouched
    assert_folder_holds_exactly_the_kept_clips(folder / "out", later)
