"""A `dedup:` stage in config.yaml: validated with one line naming the stage and field, streamed around (the
executor never sees it), and part of the results key, so changed dedup settings never mix into a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.pipeline.config import PipelineConfig, load_config
from tests.orchestrator.pipeline.runs import FIXTURES

HEAD = """\
inputs: [videos/]
output: out
stages:
  - {name: shots, split: colour_splitter.ColourSplitter, params: {env: ocr}}
  - {name: vec, model: frame_vector.FrameVector, params: {env: ocr}}
"""


def load(tmp_path: Path, stages: str) -> PipelineConfig:
    for name in ("frame_vector.py", "colour_splitter.py"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    path = tmp_path / "pipeline.yaml"
    path.write_text(HEAD + stages)
    return load_config(path)[0]


def test_a_dedup_stage_is_left_out_of_streaming_and_its_settings_decide_the_results(tmp_path: Path) -> None:
    config = load(tmp_path, "  - {name: near, dedup: {column: vec.embedding, method: semantic, threshold: 0.9}}\n")
    assert [s.name for s in config.streaming.stages] == ["shots", "vec"]
    assert [s.name for s in config.dedup_stages] == ["near"]
    assert config.dedup_stages[0].dedup.limit == 0.9 and config.dedup_stages[0].dedup.filter
    other = load(tmp_path, "  - {name: near, dedup: {column: vec.embedding, method: semantic, threshold: 0.8}}\n")
    assert config.results_key() != other.results_key()
    phash = load(tmp_path, "  - {name: near, dedup: {column: vec.phash, method: phash}}\n")
    assert phash.dedup_stages[0].dedup.limit == 6


@pytest.mark.parametrize(("stages", "message"), [
    ("  - {name: d, dedup: {column: vec.phash, method: phash, threshold: 0.9}}\n",
     "line 6: stage 'd': field 'dedup': threshold applies to method semantic, not phash"),
    ("  - {name: d, dedup: {column: embedding, method: semantic}}\n",
     "line 6: stage 'd': field 'dedup.column': must be <stage>.<field>, as in embed.embedding (got 'embedding')"),
    ("  - {name: d, dedup: {column: vec.embedding, method: semantic, threshold: 1.5}}\n",
     "line 6: stage 'd': field 'dedup.threshold'"),
    ("  - {name: d, dedup: {column: shots.embedding, method: semantic}}\n",
     "stage 'd': dedup column 'shots.embedding' must name a field of a model stage (vec)"),
    ("  - {name: d, dedup: {column: vec.embedding, method: semantic}}\n  - {name: keep, filter: {min_duration_s: 1}}\n",
     "dedup stages run once the streaming stages are done with a batch of videos, so they come last"),
])
def test_a_bad_dedup_stage_is_one_line_naming_the_stage_and_field(tmp_path: Path, stages: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, stages)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
