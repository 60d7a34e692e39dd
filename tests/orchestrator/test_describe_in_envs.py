"""Describing models in child processes: which env, what they declare, and failures that say the fix.

Nothing here imports a model module in the test process; the children are real interpreters (this
one, and the project's envs).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from models.model_interface import SplitWindow
from orchestrator.declarations import ModelDeclarations
from orchestrator.describe import (
    DescribeError,
    DescribeFailure,
    DescribeRequest,
    describe_in_envs,
    env_names,
    run_describe,
)
from orchestrator.envs import EnvRegistry
from orchestrator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL_STYLE = ROOT / "tests" / "fixtures" / "tutorial_style" / "radio_like.py"
GUARDED_COMPUTED = """\
from models import conda_utils, model_utils

if conda_utils.is_running_in_env("ocr"):
    import rapidocr_onnxruntime


class Computed(model_utils.ModelInterface):
    def __init__(self, env="ocr"):
        self.env = env

    conda_env_name = property(lambda self: self.env)
    num_gpus = property(lambda self: 0.0)

    def setup(self):
        pass

    def __call__(self, batch):
        return batch
"""
UNGUARDED_COMPUTED = "import torch\n" + GUARDED_COMPUTED
WRONG_ENV = "import rapidocr_onnxruntime\n" + GUARDED_COMPUTED
DESCRIBED = {"class": "Windowed", "conda_env_name": "video_splitting", "weights_names": ["org/a"],
             "id_file_mapping": {"org/a": ["config.json"]}, "num_gpus": 0.25, "batched": True,
             "split_window": {"step": 50, "context": 25}}


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    for name, text in (("guarded", GUARDED_COMPUTED), ("unguarded", UNGUARDED_COMPUTED), ("wrong_env", WRONG_ENV),
                       ("exits", "import os\nos._exit(3)\n"),
                       ("hangs", "import sys, threading\nprint('stuck', file=sys.stderr)\nthreading.Event().wait()\n")):
        (tmp_path / f"{name}.py").write_text(text)
    return tmp_path


def test_declarations_decode_and_bad_ones_are_named() -> None:
    declared = ModelDeclarations.from_dict(DESCRIBED)
    assert declared == ModelDeclarations("Windowed", "video_splitting", ("org/a",), {"org/a": ("config.json",)},
                                         0.25, True, SplitWindow(50, 25))
    assert declared.label == "Windowed"
    for field, value, expected in [("conda_env_name", "", "a non-empty string"),
                                   ("weights_names", "org/a", "a list of strings"),
                                   ("id_file_mapping", {"org/a": "config.json"}, "a mapping of weights names"),
                                   ("num_gpus", True, "a number >= 0"), ("batched", 1, "True or False"),
                                   ("split_window", {"step": 0, "context": 25}, "SplitWindow(step >= 1")]:
        message = rf"model Windowed declares {field} = .*, which is not {re.escape(expected)}"
        with pytest.raises(ConfigError, match=message):
            ModelDeclarations.from_dict({**DESCRIBED, field: value})


def test_the_env_comes_from_the_request_then_the_source_then_a_child_of_this_interpreter(user_dir: Path,
                                                                                           parent_imports) -> None:
    names = env_names([DescribeRequest(f"{TUTORIAL_STYLE}:RadioLike", env="ocr"),
                       DescribeRequest(f"{TUTORIAL_STYLE}:BatchedRadioLike"),
                       DescribeRequest("guarded.Computed", {"env": "content_filter"}),
                       DescribeRequest("unguarded.Computed")], [user_dir])
    assert names[:3] == ["ocr", "video_splitting", "content_filter"]
    failure = names[3]
    assert failure == DescribeFailure("ModelLoadError", "model 'unguarded.Computed': module 'unguarded' does not "
                                      "import: No module named 'torch'", "torch", None)
    assert isinstance(failure, DescribeFailure)
    assert failure.explain(DescribeRequest("unguarded.Computed"), [user_dir]) == (
        f"model 'unguarded.Computed' ({user_dir / 'unguarded.py'}) imports 'torch' (No module named 'torch' in the "
        f"orchestrator's environment), and its env cannot be read from the source: add `env: <name>` to the "
        f"stage/entry, or guard the import with `if conda_utils.is_running_in_env(\"<name>\"):`")
    assert DescribeFailure("ModelLoadError", "", "torch").explain(DescribeRequest(f"{TUTORIAL_STYLE}:RadioLike")) \
        .startswith(f"model '{TUTORIAL_STYLE}:RadioLike' imports 'torch' (No module named 'torch' in the")
    typo = env_names([DescribeRequest("guarded_typo.Computed")], [user_dir])[0]
    assert isinstance(typo, DescribeFailure) and typo.explain(DescribeRequest("guarded_typo.Computed")) == (
        "model 'guarded_typo.Computed': module 'guarded_typo' does not import: No module named 'guarded_typo'; if the "
        "module is installed only in the model's env, add `env: <name>` to the stage/entry")
    assert parent_imports() == [] and not {"guarded", "unguarded", "radio_like"} & set(sys.modules)


def test_each_model_is_described_inside_its_env_in_request_order(user_dir: Path, parent_imports) -> None:
    registry = EnvRegistry()
    ocr, video_splitting = registry.ensure("ocr"), registry.ensure("video_splitting")
    requests = [DescribeRequest(f"{TUTORIAL_STYLE}:RadioLike"), DescribeRequest("guarded.Computed"),
                DescribeRequest(f"{TUTORIAL_STYLE}:BatchedRadioLike", {"dtype": "float16"}),
                DescribeRequest("wrong_env.Computed", {"env": "video_splitting"})]
    outcomes = describe_in_envs(list(zip(requests, [video_splitting, ocr, video_splitting, video_splitting],
                                         strict=True)), [user_dir])
    assert [(o.label, o.conda_env_name, o.batched) for o in outcomes[:3]] == [  # type: ignore[union-attr]
        ("RadioLike", "video_splitting", False), ("Computed", "ocr", False), ("BatchedRadioLike", "video_splitting",
                                                                              True)]
    failure = outcomes[3]
    assert isinstance(failure, DescribeFailure) and failure.env == "video_splitting"
    assert failure.explain(requests[3], [user_dir]) == (
        f"model 'wrong_env.Computed' ({user_dir / 'wrong_env.py'}) does not import in env 'video_splitting': it "
        f"imports 'rapidocr_onnxruntime' (No module named 'rapidocr_onnxruntime'): add it to "
        f"envs/video_splitting/environment.yml and run `orchestrator envs lock video_splitting`, or name an env that "
        f"has it with `env:`")
    assert parent_imports() == []


def test_a_describe_process_that_dies_or_hangs_is_reported_with_its_stderr(user_dir: Path) -> None:
    environ = {"PYTHONPATH": f"{ROOT}:{user_dir}"}
    with pytest.raises(DescribeError, match=r"-m workers.describe failed \(exit code 3\) describing exits.Model; its "
                                            r"stderr ends: \(empty\)"):
        run_describe(sys.executable, environ, [DescribeRequest("exits.Model")])
    with pytest.raises(DescribeError, match=r"took longer than 2s describing hangs.Model: a module import or a "
                                            r"constructor is stuck"):
        run_describe(sys.executable, environ, [DescribeRequest("hangs.Model")], timeout_s=2)


def test_the_parent_sentinels_record_an_import_that_the_importer_catches(parent_imports) -> None:
    """The guard the tests above rely on: code that tries torch and swallows every error is still caught."""
    try:
        import torch

        torch.cuda.is_available()
    except Exception as exc:  # what a careless `try: import torch` in the orchestrator would do
        assert "imported the test sentinel 'torch'" in str(exc)
    assert parent_imports() == ["torch"]
