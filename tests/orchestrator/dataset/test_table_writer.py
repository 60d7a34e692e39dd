"""The writer's clip table: rows replaced atomically (update_rows), parts rebuilt from `.parts` when missing,
torn or stale, types recorded across runs, a result that breaks its declared type named, `--fresh` setting the
table aside with the rest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.dataset.schema import format_type
from orchestrator.dataset.shards import MANIFEST, SHARDS_DIR
from orchestrator.dataset.table import TableSpec, read_table
from orchestrator.errors import ConfigError, PipelineError
from orchestrator.pipeline.items import Clip, VideoItem
from orchestrator.pipeline.media.video import VideoMeta
from orchestrator.pipeline.output.writer import OutputWriter
from tests.orchestrator.pipeline.test_writer import KEY, rows, video_file

SPEC = TableSpec({"det": {"boxes": "list<fixed_size_list<int32>[4]>", "score": "float32"}})


def finish(writer: OutputWriter, video, results: list[dict]) -> list[dict]:
    item = VideoItem(0, video, VideoMeta(24.0, 64, 48))
    clips = []
    for index, result in enumerate(results):
        encoded = writer.clips_tmp / f"{video.video_id}_{index:04d}.mp4"
        encoded.write_bytes(b"clip")
        clips.append(Clip(item, index, index * 24, index * 24 + 23, encoded=encoded, results=result))
    return writer.finish_video(item, clips)


def parts_schemas(out: Path) -> list[pa.Schema]:
    return [pq.read_schema(p).remove_metadata() for p in sorted((out / "clips.parquet").glob("*.parquet"))]


def test_update_rows_replaces_a_videos_rows_everywhere_and_drops_the_clip_no_longer_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a = video_file(tmp_path, "a")
    writer = OutputWriter(out, KEY, [a], table=SPEC)
    first, second = finish(writer, a, [{"det": {"boxes": [], "score": 0.5}}] * 2)
    second = {**second, "kept": False, "duplicate_of": first["clip_id"], "filtered_by": ["dedup"]}
    writer.update_rows("a", [first, second])
    assert not (out / second["path"]).exists() and (out / first["path"]).exists()
    expected = [first, {**second, "path": None}]
    assert json.loads((out / ".parts" / "a.json").read_text())["rows"] == expected == rows(out)
    table = read_table(out).to_pylist()
    assert [(r["kept"], r["duplicate_of"], r["path"]) for r in table] == [
        (True, None, first["path"]), (False, first["clip_id"], None)]
    with pytest.raises(PipelineError, match="no finished video 'b'"):
        writer.update_rows("b", [])


def test_the_first_row_a_run_changes_withdraws_the_shards_manifest(tmp_path: Path) -> None:
    """Shards certified by their manifest hold the rows as they were: once rows change, the manifest goes (a run
    that stops before it writes shards again leaves none that claim the old rows), and the next write starts over."""
    out = tmp_path / "out"
    a, b = video_file(tmp_path, "a"), video_file(tmp_path, "b")
    writer = OutputWriter(out, KEY, [a, b], table=SPEC)
    first = finish(writer, a, [{"det": {"boxes": [], "score": 0.5}}])
    (out / SHARDS_DIR).mkdir()
    (out / SHARDS_DIR / MANIFEST).write_text("{}\n")  # as a write of the shards ends
    writer = OutputWriter(out, KEY, [a, b], table=SPEC)
    assert (out / SHARDS_DIR / MANIFEST).is_file(), "opening the folder changes no row"
    writer.update_rows("a", [{**first[0], "kept": False, "filtered_by": ["dedup"]}])
    assert not (out / SHARDS_DIR / MANIFEST).exists()


def test_a_stage_that_failed_on_a_clip_or_never_saw_it_leaves_its_key_null(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a = video_file(tmp_path, "a")
    writer = OutputWriter(out, KEY, [a], table=TableSpec({"det": None, "later": None}))
    item = VideoItem(0, a, VideoMeta(24.0, 64, 48))
    failed = Clip(item, 0, 0, 23, results={}, errors={"det": "failed on 3 attempts"})
    writer.finish_video(item, [failed])
    (row,) = rows(out)
    assert row["det"] is None and row["later"] is None and row["kept"] is False
    assert row["errors"] == [{"stage": "det", "reason": "failed on 3 attempts"}]
    assert row["filtered_by"] == ["error:det"]
    assert read_table(out).to_pylist() == [row]


def test_a_table_part_missing_torn_or_older_than_its_rows_is_rebuilt_and_one_without_rows_removed(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    videos = [video_file(tmp_path, name) for name in "abc"]
    writer = OutputWriter(out, KEY, videos, table=SPEC)
    for video in videos:
        finish(writer, video, [{"det": {"boxes": [[1, 2, 3, 4]], "score": 0.25}}])
    table_dir = out / "clips.parquet"
    (table_dir / "a.parquet").unlink()
    (table_dir / "b.parquet").write_bytes((table_dir / "b.parquet").read_bytes()[:40])
    part = json.loads((out / ".parts" / "c.json").read_text())
    part["rows"][0]["det"]["score"] = 0.75  # the part is the truth; its table part is now stale
    (out / ".parts" / "c.json").write_text(json.dumps(part))
    (table_dir / "gone.parquet").write_bytes((table_dir / "c.parquet").read_bytes())
    OutputWriter(out, KEY, videos, table=SPEC)
    assert sorted(p.name for p in table_dir.glob("*.parquet")) == ["a.parquet", "b.parquet", "c.parquet"]
    assert [r["det"]["score"] for r in read_table(out).to_pylist()] == [0.25, 0.25, 0.75]


def test_inferred_types_are_recorded_so_a_later_run_and_an_empty_list_keep_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    empty, full, empty_again = (video_file(tmp_path, name) for name in ("a_empty", "b_full", "c_empty"))
    finish(OutputWriter(out, KEY, [empty]), empty, [{"det": {"boxes": [], "vec": np.ones(4, np.float32)}}])
    finish(OutputWriter(out, KEY, [full]), full, [{"det": {"boxes": [{"x": 1}], "vec": np.ones(4, np.float32)}}])
    schemas = parts_schemas(out)  # the first part, written while its boxes' type was unknown, is rewritten
    assert len(schemas) == 2 and schemas[0].equals(schemas[1])
    finish(OutputWriter(out, KEY, [empty_again]), empty_again, [{"det": {"boxes": [], "vec": None}}])
    schemas = parts_schemas(out)
    assert len(schemas) == 3 and all(s.equals(schemas[0]) for s in schemas)
    expected = "struct<boxes: list<struct<x: int64>>, vec: fixed_size_list<float32>[4]>"
    assert format_type(schemas[0].field("det").type) == expected


def test_a_result_its_declared_type_cannot_hold_stops_with_one_line_and_keeps_the_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a = video_file(tmp_path, "a")
    writer = OutputWriter(out, KEY, [a], table=SPEC)
    with pytest.raises(PipelineError, match=r"a: column 'det' is struct<boxes: list<fixed_size_list<int32>\[4\]>.*"
                                            r"make the model's declared outputs match what it returns"):
        finish(writer, a, [{"det": {"boxes": [[1, 2]], "score": 0.5}}])
    assert json.loads((out / ".parts" / "a.json").read_text())["rows"][0]["det"]["boxes"] == [[1, 2]]


def test_bad_declarations_and_a_stage_named_like_a_column_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"stage 'det': declared outputs: 'list<int32': expected '>' at the end"):
        TableSpec({"det": {"boxes": "list<int32"}})
    with pytest.raises(ConfigError, match="stage 'kept' has the name of a column every clip row has"):
        TableSpec({"kept": None})


def test_fresh_sets_the_table_and_provenance_aside_with_the_other_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a = video_file(tmp_path, "a")
    finish(OutputWriter(out, KEY, [a], table=SPEC), a, [{"det": {"boxes": [], "score": 1.0}}])
    writer = OutputWriter(out, {**KEY, "clip_codec": "other"}, [a], fresh=True, table=SPEC)
    assert writer.set_aside is not None
    assert (writer.set_aside / "clips.parquet" / "a.parquet").is_file()
    assert (writer.set_aside / "provenance.jsonl").is_file()
    assert read_table(out).num_rows == 0
