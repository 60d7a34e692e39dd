"""The dedup stage over a folder of finished videos, in this process: `filter: false` only marks, perceptual
hashes dedup like vectors, a video redone since it was judged is judged again, and a column of values that are
not vectors stops the pass with one line naming the stage and the column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.dataset.dedup_writer import DedupingWriter
from orchestrator.errors import PipelineError
from orchestrator.pipeline.config import StageConfig
from tests.orchestrator.dataset.dedup_folders import KEY, make_folder, read_parts, write_part

SEMANTIC = {"column": "vec.embedding", "method": "semantic", "threshold": 0.97}


def dedup(out: Path, **settings: Any) -> None:
    spec = settings if "method" in settings else {**SEMANTIC, **settings}
    DedupingWriter(out, KEY, [], dedup=[StageConfig.model_validate({"name": "near", "dedup": spec})]).finish_dedup()


def marked(out: Path) -> dict[str, str]:
    return {f"{v}_{r['clip_index']:04d}": r["duplicate_of"] for v, rows in read_parts(out).items() for r in rows
            if r.get("duplicate_of")}


def test_filter_false_marks_duplicates_and_keeps_their_clips(tmp_path: Path) -> None:
    make_folder(tmp_path / "a")
    make_folder(tmp_path / "b")
    dedup(tmp_path / "a")
    dedup(tmp_path / "b", filter=False)
    assert marked(tmp_path / "a") == marked(tmp_path / "b") and len(marked(tmp_path / "b")) >= 8
    rows = [r for rows in read_parts(tmp_path / "b").values() for r in rows]
    assert all(r["path"] and r["filtered_by"] is None for r in rows)
    assert len(list((tmp_path / "b" / "clips").iterdir())) == len(rows)
    filtered = [r for rows in read_parts(tmp_path / "a").values() for r in rows if r.get("duplicate_of")]
    assert all(r["path"] is None and r["filtered_by"] == ["near"] and r["kept"] is False for r in filtered)


def test_perceptual_hashes_find_the_same_duplicates_as_the_vectors(tmp_path: Path) -> None:
    make_folder(tmp_path / "a")
    make_folder(tmp_path / "b")
    dedup(tmp_path / "a")
    dedup(tmp_path / "b", column="vec.phash", method="phash", max_distance=2)
    assert marked(tmp_path / "a") == marked(tmp_path / "b")


def test_a_video_redone_since_it_was_judged_is_judged_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = make_folder(out)
    dedup(out)
    first = marked(out)
    redone = next(v for v in written if any(k.startswith(v) for k in first))
    write_part(out, redone, written[redone])  # as a rerun that redoes the video writes it: no marks
    for row in written[redone]:
        (out / row["path"]).write_bytes(b"clip")
    dedup(out)
    assert marked(out) == first


def test_values_that_are_not_vectors_stop_the_pass_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = make_folder(out, videos=2)
    written["v01"][0]["vec"]["embedding"] = [1.0, 2.0]
    write_part(out, "v01", written["v01"])
    with pytest.raises(PipelineError, match=r"^dedup stage 'near': column 'vec.embedding' holds values that are "
                                            r"not float vectors of one length \(.*\)$"):
        dedup(out)
