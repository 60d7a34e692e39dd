"""model_download.yaml: the project's own file, and every kind of bad input named by file and line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.weights.download_config import load_download_config
from orchestrator.weights.requirements import WeightsRequirement
from tests.support.cli import run_cli
from tests.support.paths import ROOT

TUTORIAL = WeightsRequirement("tutorial/tiny-vit", ("config.json", "model.safetensors"))
HELPERS = """\
from models.model_interface import ModelInterface


class Declares(ModelInterface):
    def __init__(self, names=(), mapping=None, strict=False):
        if strict:
            raise ValueError("strict mode is not supported")
        self.names, self.mapping = list(names), mapping

    conda_env_name = property(lambda self: "ocr")
    weights_names = property(lambda self: self.names)
    id_file_mapping = property(lambda self: self.mapping or {n: None for n in self.names})

    def setup(self):
        pass

    def __call__(self, batch):
        return batch


class NotAModel:
    pass
"""
UNGUARDED = """\
import torch

from models import model_utils


class Computed(model_utils.ModelInterface):
    def __init__(self, env="video_splitting"):
        self.env = env

    conda_env_name = property(lambda self: self.env)

    def setup(self):
        pass

    def __call__(self, images):
        return images.to(torch.float32)
"""


def test_the_projects_config_lists_its_models_without_importing_their_frameworks(parent_imports) -> None:
    config = load_download_config(ROOT / "model_download.yaml")
    assert [(m.label, m.declarations.conda_env_name, m.requirements) for m in config.models] == [
        ("TransNetV2ShotDetector", "video_splitting", ()),
        ("RapidOCRTextReader", "ocr", ()),
        ("NudeNetContentFilter", "content_filter", ()),
        ("PerceptualHashEmbedder", "ocr", ()),
        ("TinyFrameEmbedder", "video_splitting", (TUTORIAL,)),
    ]
    assert config.requirements() == [TUTORIAL]
    assert parent_imports() == [] and "cv2" not in sys.modules


def test_models_list_over_the_projects_config(tmp_path: Path) -> None:
    result = run_cli("models", "list", "--json", "--weights-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["weights_dir"] == str(tmp_path)
    assert [(r["model"], r["env"], r["weights"], r["cached"]) for r in listed["models"]] == [
        ("TransNetV2ShotDetector", "video_splitting", None, None),
        ("RapidOCRTextReader", "ocr", None, None),
        ("NudeNetContentFilter", "content_filter", None, None),
        ("PerceptualHashEmbedder", "ocr", None, None),
        ("TinyFrameEmbedder", "video_splitting", "tutorial/tiny-vit", "no"),
    ]
    assert listed["models"][4]["files"] == ["config.json", "model.safetensors"]
    table = run_cli("models", "list", "--weights-dir", str(tmp_path))
    assert "TinyFrameEmbedder" in table.stdout and "(in its env)" in table.stdout
    narrow = run_cli("models", "list", "--weights-dir", str(tmp_path), env={"COLUMNS": "80"}).stdout
    assert max(map(len, narrow.splitlines())) <= 80
    for name in ("TransNetV2ShotDetector", "NudeNetContentFilter", "video_splitting", "content_filter"):
        assert f" {name} " in narrow


def _config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "cfg_models.py").write_text(HELPERS)
    (tmp_path / "cfg_torch.py").write_text(UNGUARDED)
    path = tmp_path / "model_download.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  - class: cfg_models.Declares\n    params: {names: [a/b]\n", r"line 4 is not valid YAML"),
        ("", r"expected a mapping with a 'models' list"),
        ("models:\n  - params: {}\n", r"line 2: field 'models\[0\].class': Field required"),
        ("models:\n  - class: cfg_models.Declares\n    weights: [a/b]\n",
         r"line 3: field 'models\[0\].weights': Extra inputs are not permitted"),
        ("models:\n  - class: cfg_models.Declares\n  - class: nowhere.Model\n",
         r"line 3: model 'nowhere.Model': module 'nowhere' does not import"),
        ("models:\n  - class: cfg_models.NotAModel\n", r"line 2: model 'cfg_models.NotAModel' is not a subclass"),
        ("models:\n  - class: cfg_models.py:Missing\n", r"line 2: model .*has no attribute 'Missing'"),
        ("models:\n  - class: cfg_models.Declares\n    params: {colour: red}\n",
         r"line 2: model 'cfg_models.Declares' rejected params \['colour'\]"),
        ("models:\n  - class: cfg_models.Declares\n    params: {strict: true}\n",
         r"line 2: model 'cfg_models.Declares' failed to import or to accept params .*ValueError: strict mode"),
        ("models:\n  - class: cfg_models.Declares\n    params: {names: [../etc/passwd]}\n",
         r"line 2: model Declares: weights name '../etc/passwd' must be a relative name"),
        ("models:\n  - class: cfg_models.Declares\n    params: {names: [a/b], mapping: {a/b: [../../x]}}\n",
         r"line 2: model Declares: id_file_mapping entry of 'a/b' '../../x' must be a relative path"),
        ("models:\n  - class: cfg_models.Declares\n    params: {names: [a/b]}\n    revisions: {c/d: v1}\n",
         r"line 2: model Declares: id_file_mapping/revisions name \['c/d'\]"),
        (("models:\n  - {class: cfg_models.Declares, params: {names: [a/b]}, revisions: {a/b: v1}}\n"
         "  - {class: cfg_models.Declares, params: {names: [a/b]}, revisions: {a/b: v2}}\n"),
         r"pinned to two revisions: 'v1' and 'v2'"),
        ("models:\n  - class: cfg_models.Declares\n  - class: cfg_torch.Computed\n",
         (r"line 3: model 'cfg_torch.Computed' \(.*cfg_torch.py\) imports 'torch' \(No module named 'torch' in the "
          r"orchestrator's environment\), and its env cannot be read from the source: add `env: <name>` to the "
          r"stage/entry, or guard the import with `if conda_utils.is_running_in_env\(\"<name>\"\):`")),
        ("models:\n  - {class: cfg_torch.Computed, env: ocr, params: {env: ocr}}\n",
         (r"line 2: model 'cfg_torch.Computed' \(.*cfg_torch.py\) does not import in env 'ocr': it imports 'torch' "
          r"\(No module named 'torch'\): add it to envs/ocr/environment.yml")),
        ("models:\n  - {class: cfg_models.Declares, env: content_filter}\n",
         (r"line 2: model 'cfg_models.Declares' declares conda_env_name 'ocr' but the entry's `env:` says "
          r"'content_filter': make them agree")),
        ("models:\n  - class: cfg_models.Declares\n    env: nope\n",
         r"line 2: model 'cfg_models.Declares' runs in env 'nope': unknown env 'nope'"),
        ("models:\n  - class: cfg_models.Declares\n    env: ''\n",
         r"line 3: field 'models\[0\].env': String should have at least 1 character"),
    ],
)
def test_bad_config_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = _config(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as error:
        load_download_config(path)
    assert str(error.value).startswith(f"{path}: ")


def test_a_named_env_describes_a_model_whose_env_is_computed_behind_an_unguarded_import(tmp_path: Path,
                                                                                         parent_imports) -> None:
    path = _config(tmp_path, "models:\n  - {class: cfg_torch.Computed, env: video_splitting}\n")
    (model,) = load_download_config(path).models
    assert (model.label, model.declarations.conda_env_name, model.requirements) == ("Computed", "video_splitting", ())
    assert parent_imports() == [] and "cfg_torch" not in sys.modules


def test_file_paths_resolve_from_the_configs_folder_and_selection_merges(tmp_path: Path) -> None:
    path = _config(tmp_path, "models:\n"
                             "  - {class: cfg_models.py:Declares, params: {names: [a/b], mapping: {a/b: [x.bin]}}}\n"
                             "  - {class: cfg_models.Declares, params: {names: [a/b, c/d], mapping: {a/b: [y.bin]}}}\n")
    assert load_download_config(path).requirements() == [WeightsRequirement("a/b", ("x.bin", "y.bin")),
                                                         WeightsRequirement("c/d")]
    assert str(tmp_path) not in sys.path


def test_cli_reports_a_bad_config_as_one_line(tmp_path: Path) -> None:
    path = _config(tmp_path, "models:\n  - class: cfg_models.NotAModel\n")
    result = run_cli("models", "list", "--config", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {path}: line 2: model 'cfg_models.NotAModel' is not a subclass")
    unknown = run_cli("models", "download", "--models", "Nope", "--config", str(ROOT / "model_download.yaml"))
    assert unknown.returncode == 2 and "--models 'Nope' is no model or weights name" in unknown.stderr
    assert "known: NudeNetContentFilter, PerceptualHashEmbedder, RapidOCRTextReader, TinyFrameEmbedder" in \
        unknown.stderr.replace("\n", " ")
    with pytest.raises(ConfigError, match=r"cannot read download config .*nope.yaml: No such file.*--config"):
        load_download_config(tmp_path / "nope.yaml")
