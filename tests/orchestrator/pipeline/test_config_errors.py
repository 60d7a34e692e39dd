"""A config with problems gets all of them at once, each on its line of the file, its stage named by `name:`,
in plain words, and the closest known name for a misspelt field, choice, model module or model class."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.pipeline.config import load_config

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

CONFIG = """\
inputs: [a.mp4]
output: out
clip_codec: nope
stages:
  - {name: shots, split: models.transnetv2.TransNetV2ShotDetector}
  - name: ocr
    model: models.rapidocr.RapidOCRTextReader
    replica: 2
    frames: {sampling: one_per_clp}
  - {filter: {min_duration_s: 1.0}}
"""


def problems(tmp_path: Path, text: str, **overrides: object) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_config(path, **overrides)
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ").splitlines()


def test_every_problem_is_listed_at_once_in_the_files_order_with_its_line_and_stage_name(tmp_path: Path) -> None:
    assert problems(tmp_path, CONFIG) == [
        "4 problems",
        "  line 3: field 'clip_codec': this FFmpeg build has no video encoder 'nope' (libx264 is the default)",
        "  line 8: stage 'ocr': unknown field 'replica' (did you mean 'replicas'?)",
        ("  line 9: stage 'ocr': field 'frames.sampling': must be one of every_frame, per_second, one_per_clip "
        "(got 'one_per_clp') (did you mean 'one_per_clip'?)"),
        "  line 10: stage 3 (no name): missing field 'name'",
    ]


GOOD = """\
inputs: [a.mp4]
output: out
stages:
  - {name: shots, split: models.transnetv2.TransNetV2ShotDetector}
  - name: ocr
    model: models.rapidocr.RapidOCRTextReader
    replicas: 2
    frames: {sampling: one_per_clip}
  - {name: keep, filter: {min_duration_s: 1.0}}
"""
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        ("stages:", "stage:", "line 3: unknown field 'stage' (did you mean 'stages'?)"),
        ("replicas: 2", "max_atempts: 2",
         "line 7: stage 'ocr': unknown field 'max_atempts' (did you mean 'max_attempts'?)"),
        ("one_per_clip}", "one_per_clip, max_frame: 3}",
         "line 8: stage 'ocr': unknown field 'frames.max_frame' (did you mean 'frames.max_frames'?)"),
        ("min_duration_s:", "min_duration:",
         "line 9: stage 'keep': unknown field 'filter.min_duration' (did you mean 'filter.min_duration_s'?)"),
        ("min_duration_s:", "longer_than:", ("line 9: stage 'keep': unknown field 'filter.longer_than' (filter's "
                                            "fields: absent, max, min, min_duration_s, present)")),
        ("replicas: 2", "replicas: 0",
         "line 7: stage 'ocr': field 'replicas': must be a whole number, at least 1, or auto (got 0)"),
        ("replicas: 2", "threads: many", "line 7: stage 'ocr': field 'threads': must be a whole number (got 'many')"),
        ("replicas: 2", "batch_size: 0", "line 7: stage 'ocr': field 'batch_size': must be >= 1 (got 0)"),
        ("name: keep", "name: 9keep", ("line 9: stage '9keep': field 'name': must start with a letter or _ and hold "
                                      "only letters, digits and _ (got '9keep')")),
        ("TransNetV2ShotDetector", "TransNetV2ShotDetektor",
         (f"line 4: stage 'shots': model 'models.transnetv2.TransNetV2ShotDetektor': {ROOT}/models/transnetv2.py "
         f"defines no 'TransNetV2ShotDetektor' (did you mean 'TransNetV2ShotDetector'?)")),
        ("models.rapidocr.", "models.rapidoc.",
         (f"line 6: stage 'ocr': model 'models.rapidoc.RapidOCRTextReader': package 'models' ({ROOT}/models) has no "
         f"module 'rapidoc' (did you mean 'models.rapidocr'?)")),
    ],
)
def test_each_problem_in_plain_words_with_the_closest_known_name(tmp_path: Path, old: str, new: str,
                                                                  line: str) -> None:
    assert old in GOOD
    assert problems(tmp_path, GOOD.replace(old, new, 1)) == [line]


def test_a_model_file_or_class_that_does_not_exist_is_named_with_the_closest_one(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "controlled_model.py", tmp_path / "controlled_model.py")
    text = GOOD.replace("models.rapidocr.RapidOCRTextReader", "controled_model.py:ControlledModel")
    assert problems(tmp_path, text) == [(f"line 6: stage 'ocr': model 'controled_model.py:ControlledModel': there is "
                                        f"no file {tmp_path}/controled_model.py (did you mean 'controlled_model.py'?)")]
    text = GOOD.replace("models.rapidocr.RapidOCRTextReader", "controlled_model.py:ControledModel")
    assert problems(tmp_path, text) == [(f"line 6: stage 'ocr': model 'controlled_model.py:ControledModel': "
                                        f"{tmp_path}/controlled_model.py defines no 'ControledModel' (did you mean "
                                        f"'ControlledModel'?)")]


def test_a_model_the_source_defines_by_import_or_cannot_settle_is_accepted(tmp_path: Path) -> None:
    """A module this interpreter cannot find may be in the model's env; one that imports * may define anything."""
    (tmp_path / "starred.py").write_text("from controlled_model import *\n")
    (tmp_path / "reexport.py").write_text("try:\n    from controlled_model import ControlledModel as Model\n"
                                          "except ImportError:\n    Model = None\n")
    for class_path in ("only_in_its_env.Model", "starred.AnyName", "reexport.Model"):
        path = tmp_path / "config.yaml"
        path.write_text(GOOD.replace("models.rapidocr.RapidOCRTextReader", class_path))
        config, _ = load_config(path)
        assert config.stages[1].model == class_path


def test_a_value_given_on_the_command_line_has_no_line_in_the_file(tmp_path: Path) -> None:
    text = GOOD.replace("output: out", "output: [not, a, folder]")
    assert problems(tmp_path, text) == ["line 2: field 'output': must be text (got ['not', 'a', 'folder'])"]
    path = tmp_path / "config.yaml"
    config, _ = load_config(path, output="elsewhere")
    assert config.output == str(Path.cwd() / "elsewhere")


def test_a_problem_of_the_whole_pipeline_comes_first_without_a_line(tmp_path: Path) -> None:
    text = GOOD.replace("split: models.transnetv2", "model: models.transnetv2").replace("TextReader", "TextRead")
    assert problems(tmp_path, text) == [
        "2 problems",
        "  the first stage, and only the first, must be a 'split' stage that finds clips",
        (f"  line 6: stage 'ocr': model 'models.rapidocr.RapidOCRTextRead': {ROOT}/models/rapidocr.py defines no "
        f"'RapidOCRTextRead' (did you mean 'RapidOCRTextReader'?)"),
    ]
