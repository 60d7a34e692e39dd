"""`python -m workers.describe`: declarations out, per-entry errors that name a missing module, clean stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from orchestrator.envs import Env
from tests.support.envs import last_json, run_in_env
from tests.support.paths import ROOT
from workers.describe import describe

TUTORIAL_STYLE = ROOT / "tests" / "fixtures" / "tutorial_style" / "radio_like.py"
MODULE = """\
import os
import sys

from models import model_utils
from models.model_interface import SplitWindow

print("chatty module", flush=True)
os.write(1, b"chatty native code\\n")


class Windowed(model_utils.ModelInterface):
    batched = True
    split_window = SplitWindow(step=50, context=25)

    def __init__(self, env="video_splitting", gpus=0.25, strict=False):
        if strict:
            raise ValueError("strict mode is not supported")
        self.env, self.gpus = env, gpus

    conda_env_name = property(lambda self: self.env)
    weights_names = property(lambda self: ["org/a", "org/b"])
    id_file_mapping = property(lambda self: {"org/a": ("config.json",), "org/b": None})
    num_gpus = property(lambda self: self.gpus)

    def setup(self):
        raise AssertionError("never set up while described")

    def __call__(self, batch):
        return batch


class SetOfGpus(Windowed):
    num_gpus = property(lambda self: {0.5})
"""


def _describe_here(tmp_path: Path, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the entry point with this interpreter, as the orchestrator runs it for models of unknown env."""
    (tmp_path / "windowed.py").write_text(MODULE)
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    done = subprocess.run([sys.executable, "-m", "workers.describe"], input=json.dumps(requests), env=environ,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "chatty module" in done.stderr and "chatty native code" in done.stderr
    return json.loads(done.stdout)


def test_describe_reads_every_declaration(tmp_path: Path) -> None:
    replies = _describe_here(tmp_path, [{"class_path": "windowed.Windowed", "params": {"gpus": 0.5}},
                                        {"class_path": f"{tmp_path / 'windowed.py'}:Windowed"}])
    assert replies[0] == {"ok": True, "declarations": {
        "class": "Windowed", "conda_env_name": "video_splitting", "weights_names": ["org/a", "org/b"],
        "id_file_mapping": {"org/a": ["config.json"], "org/b": None}, "num_gpus": 0.5, "batched": True,
        "split_window": {"step": 50, "context": 25}, "outputs": None}}
    assert replies[1]["declarations"]["num_gpus"] == 0.25


def test_each_entry_fails_alone_and_says_why(tmp_path: Path) -> None:
    replies = _describe_here(tmp_path, [
        {"class_path": f"{TUTORIAL_STYLE}:RadioLike"},
        {"class_path": "windowed.Windowed", "params": {"colour": "red"}},
        {"class_path": "windowed.Windowed", "params": {"strict": True}},
        {"class_path": "windowed.SetOfGpus"},
        {"class_path": "nowhere.Model"},
        {"class_path": "windowed.Windowed"},
    ])
    errors = [reply.get("error") for reply in replies]
    assert errors[0] == {"type": "ModelLoadError", "missing_module": "torch",
                         "message": f"model file {str(TUTORIAL_STYLE)!r} does not import: No module named 'torch'"}
    assert errors[1]["type"] == "ModelLoadError" and "rejected params ['colour']" in errors[1]["message"]
    assert errors[2] == {"type": "ValueError", "message": "strict mode is not supported"}
    assert errors[3]["type"] == "TypeError" and "set is not JSON serializable" in errors[3]["message"]
    assert errors[4]["missing_module"] == "nowhere" and "module 'nowhere' does not import" in errors[4]["message"]
    assert replies[5]["ok"] is True


def test_describe_returns_the_same_data_in_process() -> None:
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    try:
        from controlled_model import ControlledModel
    finally:
        sys.path.remove(str(ROOT / "tests" / "fixtures"))
    assert describe(ControlledModel(env="ocr")) == {
        "class": "ControlledModel", "conda_env_name": "ocr", "weights_names": [], "id_file_mapping": {},
        "num_gpus": 0.0, "batched": False, "split_window": None, "outputs": None}


_IN_ENV = """
import json, sys
from workers.describe import describe_request
replies = [describe_request({"class_path": path}) for path in sys.argv[1:]]
print(json.dumps({"replies": replies, "torch": "torch" in sys.modules}))
"""


def test_in_its_env_an_unguarded_torch_module_describes_and_describe_itself_imports_no_torch(
        video_splitting: Env) -> None:
    guarded = last_json(run_in_env(video_splitting, _IN_ENV, "models.transnetv2.TransNetV2ShotDetector",
                                   worker=False))
    assert guarded["replies"][0]["declarations"]["num_gpus"] == 0.25 and guarded["torch"] is False
    unguarded = last_json(run_in_env(video_splitting, _IN_ENV, f"{TUTORIAL_STYLE}:RadioLike",
                                     f"{TUTORIAL_STYLE}:BatchedRadioLike", worker=False))
    assert [r["declarations"]["batched"] for r in unguarded["replies"]] == [False, True]
    assert unguarded["replies"][0]["declarations"]["id_file_mapping"] == {"test-org/radio-like": ["model.safetensors"]}
