"""Provenance: what made each row, recorded once per distinct set and referenced by id, so a later run can tell
which rows a changed lock or weights affect."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.dataset.provenance import (
    PROVENANCE_FILE,
    Provenance,
    StageProvenance,
    lock_hash,
    manifest_hash,
    provenance_of,
    read_provenance,
    record_provenance,
    stage_provenance,
)
from orchestrator.dataset.table import TableSpec
from orchestrator.envs.spec import EnvSpec
from orchestrator.pipeline.output.writer import OutputWriter
from orchestrator.weights.cache import WeightsCache
from orchestrator.weights.manifest import FileRecord, Manifest
from tests.orchestrator.dataset.test_table_writer import finish
from tests.orchestrator.pipeline.test_writer import KEY, opened, video_file


def env_spec(folder: Path, lock: str) -> EnvSpec:
    folder.mkdir(exist_ok=True)
    (folder / "requirements.lock").write_text(lock)
    return EnvSpec("ocr", folder, "3.11", (), (), ())


def test_a_stage_records_its_lock_weights_and_params(tmp_path: Path) -> None:
    spec = env_spec(tmp_path / "env", "rapidocr==1.0 --hash=sha256:aa\n")
    cache = WeightsCache(tmp_path / "weights")
    stage = stage_provenance("models.rapidocr.RapidOCRTextReader", spec, ["org/absent"], {"min_score": 0.5}, cache)
    assert stage == StageProvenance("models.rapidocr.RapidOCRTextReader", "ocr", lock_hash(spec),
                                    {"org/absent": None}, {"min_score": 0.5})
    before = lock_hash(spec)
    assert before is not None and lock_hash(env_spec(tmp_path / "env", "rapidocr==1.1 --hash=sha256:bb\n")) != before
    files = (FileRecord(path="model.onnx", size=3, sha256="ab" * 32),)
    assert manifest_hash(Manifest(name="org/m", source="hub", files=files)) == \
        manifest_hash(Manifest(name="org/m", source="s3://mirror", files=files)) is not None


def test_records_are_appended_once_each_and_a_changed_lock_names_its_stage(tmp_path: Path) -> None:
    ocr = StageProvenance("models.rapidocr.RapidOCRTextReader", "ocr", "1" * 64, {}, {"min_score": 0.5})
    shots = StageProvenance("models.transnetv2.TransNetV2ShotDetector", "video_splitting", "2" * 64, {}, {})
    first = Provenance({"shots": shots, "ocr": ocr})
    relocked = Provenance({"shots": shots, "ocr": StageProvenance(ocr.model, "ocr", "3" * 64, {}, ocr.params)})
    assert record_provenance(tmp_path, first) == record_provenance(tmp_path, first) == first.id
    written = (tmp_path / PROVENANCE_FILE).read_text()
    assert record_provenance(tmp_path, relocked) == relocked.id != first.id
    lines = (tmp_path / PROVENANCE_FILE).read_text()
    assert lines.startswith(written) and len(lines.splitlines()) == 2
    assert read_provenance(tmp_path) == {first.id: first, relocked.id: relocked}
    assert first.changed_stages(relocked) == ["ocr"] and first.changed_stages(first) == []
    assert json.loads(lines.splitlines()[1])["stages"]["ocr"]["lock"] == "3" * 64


def test_each_row_names_the_record_of_the_run_that_made_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stage = StageProvenance("m.M", "ocr", "1" * 64, {}, {})
    runs = [Provenance({"det": stage}), Provenance({"det": StageProvenance("m.M", "ocr", "2" * 64, {}, {})})]
    a, b = video_file(tmp_path, "a"), video_file(tmp_path, "b")
    (row,) = finish(OutputWriter(out, KEY, [a], table=TableSpec({"det": None}, runs[0])), a, [{"det": {"n": 1}}])
    second = OutputWriter(out, KEY, [opened(a), b], table=TableSpec({"det": None}, runs[1]))
    assert second.resumable(a) == [row]
    (later,) = finish(second, b, [{"det": {"n": 2}}])
    assert provenance_of(out, row) == runs[0] and provenance_of(out, later) == runs[1]
    assert runs[0].changed_stages(provenance_of(out, later)) == ["det"]
