"""A worker in a real env ends up with the thread budget its parent gave it: the variables from
`thread_environ`, then `apply_thread_budget` after the model's module is imported and before `setup()`,
exactly the order a worker follows. Checked inside the env: torch's pools (video_splitting) and the
options of the onnxruntime sessions the model built (ocr)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from orchestrator.supervisor.threads import THREAD_VARIABLES, thread_environ
from workers.threads import THREADS_VAR

RunInEnv = Callable[..., str]

_TORCH = """
import json
import torch
from models.transnetv2 import TransNetV2ShotDetector
from workers.threads import apply_thread_budget, budget_from_environ

before = torch.get_num_threads()
applied = apply_thread_budget(budget_from_environ())
model = TransNetV2ShotDetector()
model.setup()
again = apply_thread_budget(budget_from_environ())  # torch sets inter-op threads once: no error the second time
print(json.dumps({"before": before, "applied": applied, "again": again, "intra": torch.get_num_threads(),
                  "interop": torch.get_num_interop_threads()}))
"""

_ONNXRUNTIME = """
import gc, json
from pathlib import Path
import cv2
import onnxruntime
import rapidocr_onnxruntime
from models.rapidocr import RapidOCRTextReader
from workers.threads import apply_thread_budget, budget_from_environ

applied = apply_thread_budget(budget_from_environ())
model = RapidOCRTextReader()
model.setup()
sessions = [o for o in gc.get_objects() if isinstance(o, onnxruntime.InferenceSession)]
own = [(s.get_session_options().intra_op_num_threads, s.get_session_options().inter_op_num_threads)
       for s in sessions]
explicit = onnxruntime.SessionOptions()
explicit.intra_op_num_threads, explicit.inter_op_num_threads = 2, 2
onnx_file = str(next(Path(rapidocr_onnxruntime.__file__).parent.glob("models/*cls*.onnx")))
chosen = onnxruntime.InferenceSession(onnx_file, sess_options=explicit).get_session_options()
bare = onnxruntime.InferenceSession(onnx_file).get_session_options()
print(json.dumps({"applied": applied, "model_sessions": own, "cv2": cv2.getNumThreads(),
                  "explicit": [chosen.intra_op_num_threads, chosen.inter_op_num_threads],
                  "bare": [bare.intra_op_num_threads, bare.inter_op_num_threads]}))
"""


def test_torch_runs_on_the_budget_from_the_parents_variables(run_in_env: RunInEnv) -> None:
    report = json.loads(run_in_env("video_splitting", _TORCH, environ=thread_environ(1)))
    assert report["applied"] == report["again"] == {"torch": 1}
    assert (report["intra"], report["interop"]) == (1, 1)


def test_torch_gets_the_budget_even_without_the_openmp_variables(run_in_env: RunInEnv) -> None:
    report = json.loads(run_in_env("video_splitting", _TORCH, environ={THREADS_VAR: "1"}, unset=THREAD_VARIABLES))
    if report["before"] == 1:
        pytest.skip("this machine gives torch one thread anyway: nothing to tell apart")
    assert (report["intra"], report["interop"]) == (1, 1)


def test_onnxruntime_sessions_the_model_builds_get_the_budget(run_in_env: RunInEnv) -> None:
    report = json.loads(run_in_env("ocr", _ONNXRUNTIME, environ=thread_environ(1)))
    assert report["applied"] == {"onnxruntime": 1, "cv2": 1}
    assert report["model_sessions"] and set(map(tuple, report["model_sessions"])) == {(1, 1)}
    assert report["cv2"] == 1
    assert report["bare"] == [1, 1]
    assert report["explicit"] == [2, 2], "a count the model chose itself must win over the budget"
