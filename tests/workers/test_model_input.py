"""A stage's `input:` settings: frames handed over as the model expects, copied only when they must be.

The torch cases run in the video_splitting env's interpreter, the way a worker of that env runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import numpy.typing as npt
import pytest

from orchestrator.envs import Env
from orchestrator.errors import WorkerError
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.policy import StopGrace, WorkerPolicy
from tests.support.envs import ensure_env, last_json, run_in_env
from tests.support.paths import ROOT
from workers.model_input import InputSpec, adapt_input, infer_input, resolve_input, with_input_hint

FIXTURES = ROOT / "tests" / "fixtures"
RADIO_LIKE = FIXTURES / "tutorial_style" / "radio_like.py"

FRAMES = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)


def test_the_default_hands_the_payload_over_untouched() -> None:
    payload = {"frames": FRAMES, "fps": 24.0}
    assert adapt_input(payload, InputSpec()) is payload
    assert InputSpec.from_dict(None) == InputSpec() == InputSpec.from_dict(InputSpec().to_dict())


def test_bare_frames_and_nchw_are_views_of_the_source() -> None:
    frames = adapt_input({"frames": FRAMES}, InputSpec(form="frames"))
    assert frames is FRAMES
    nchw = adapt_input({"frames": FRAMES}, InputSpec(form="frames", layout="NCHW"))
    assert nchw.shape == (2, 3, 4, 6) and np.shares_memory(nchw, FRAMES)
    assert np.array_equal(nchw, FRAMES.transpose(0, 3, 1, 2))


def test_a_dtype_converts_values_unscaled_and_the_dict_keeps_its_other_keys() -> None:
    adapted = adapt_input({"frames": FRAMES, "fps": 24.0}, InputSpec(layout="NCHW", dtype="float32"))
    assert set(adapted) == {"frames", "fps"} and adapted["fps"] == 24.0
    frames = adapted["frames"]
    assert frames.dtype == np.float32 and frames.shape == (2, 3, 4, 6) and not np.shares_memory(frames, FRAMES)
    assert np.array_equal(frames, FRAMES.transpose(0, 3, 1, 2).astype(np.float32))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"form": "list"}, r"input form 'list' is not one of dict, frames"),
        ({"type": "jax"}, r"input type 'jax' is not one of numpy, torch"),
        ({"layout": "HWC"}, r"input layout 'HWC' is not one of NHWC, NCHW"),
        ({"dtype": "float"}, r"input dtype 'float' is not a numeric dtype name like 'float32'"),
        ({"dtype": "U5"}, r"input dtype 'U5' is not a numeric dtype name"),
        ({"dtype": "bfloat16"}, r"input dtype 'bfloat16' needs type torch"),
        ({"form": "frames", "shape": [1]}, r"input has unknown keys \['shape'\]: allowed are form, type, layout"),
    ],
)
def test_bad_settings_are_refused_by_name(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InputSpec.from_dict(settings)


def test_frames_that_are_not_a_4d_array_are_refused() -> None:
    with pytest.raises(ValueError, match=r"payload frames must be an \(N, H, W, C\) array, got ndarray shape \(4, 6, "
                                         r"3\)"):
        adapt_input({"frames": FRAMES[0]}, InputSpec(form="frames", layout="NCHW"))


_TORCH_CASES = """
import json, sys, warnings
import numpy as np
from workers.model_input import InputSpec, adapt_input

warnings.simplefilter("error")  # torch warns when it wraps read-only memory: that must never happen
facts = {}
writable = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
adapt_input({"frames": writable}, InputSpec(form="frames", layout="NCHW", dtype="float32"))
facts["numpy_paths_import_torch"] = "torch" in sys.modules
read_only = np.frombuffer(writable.tobytes(), dtype=np.uint8).reshape(writable.shape)

def shares(tensor, array):
    return tensor.data_ptr() == array.ctypes.data

for name, source, spec in [
    ("nhwc", writable, InputSpec(form="frames", type="torch")),
    ("nchw", writable, InputSpec(form="frames", type="torch", layout="NCHW")),
    ("read_only", read_only, InputSpec(form="frames", type="torch", layout="NCHW")),
    ("float32", read_only, InputSpec(form="frames", type="torch", layout="NCHW", dtype="float32")),
    ("bfloat16", read_only, InputSpec(form="frames", type="torch", layout="NCHW", dtype="bfloat16")),
    ("dict", writable, InputSpec(type="torch", dtype="float16")),
]:
    adapted = adapt_input({"frames": source, "fps": 24.0}, spec)
    tensor = adapted["frames"] if spec.form == "dict" else adapted
    expected = source.transpose(0, 3, 1, 2) if spec.layout == "NCHW" else source
    facts[name] = {"type": type(tensor).__module__ + "." + type(tensor).__name__, "dtype": str(tensor.dtype),
                   "shape": list(tensor.shape), "shares": shares(tensor, source),
                   "equal": bool((tensor.float().numpy() == expected.astype(np.float32)).all()),
                   "keys": sorted(adapted) if spec.form == "dict" else None}
print(json.dumps(facts))
"""


def test_torch_tensors_share_writable_memory_and_copy_read_only_memory(video_splitting: Env) -> None:
    facts = last_json(run_in_env(video_splitting, _TORCH_CASES))
    assert facts.pop("numpy_paths_import_torch") is False
    expected = {
        "nhwc": ("torch.uint8", [2, 4, 6, 3], True, None),
        "nchw": ("torch.uint8", [2, 3, 4, 6], True, None),
        "read_only": ("torch.uint8", [2, 3, 4, 6], False, None),
        "float32": ("torch.float32", [2, 3, 4, 6], False, None),
        "bfloat16": ("torch.bfloat16", [2, 3, 4, 6], False, None),
        "dict": ("torch.float16", [2, 4, 6, 3], False, ["fps", "frames"]),
    }
    for name, (dtype, shape, shares, keys) in expected.items():
        assert facts[name] == {"type": "torch.Tensor", "dtype": dtype, "shape": shape, "shares": shares,
                               "equal": True, "keys": keys}, name


class Untyped:
    def __call__(self, batch): ...


class TakesADict:
    def __call__(self, batch: dict[str, np.ndarray]) -> dict: ...


class TakesAnArray:
    def __call__(self, frames: npt.NDArray[np.uint8]) -> np.ndarray: ...


class TakesArrays:
    batched = True

    def __call__(self, clips: list[np.ndarray | None]) -> list: ...


class TakesATensor:  # torch is not installed here: the annotation's text is what is read
    def __call__(self, images: Union[torch.Tensor, npt.NDArray[np.uint8]]) -> torch.Tensor: ...  # noqa: F821, UP007


class TakesTensorsByName:
    def __call__(self, batch: dict[str, torch.Tensor]) -> dict: ...  # noqa: F821


@pytest.mark.parametrize(("model", "expected"), [
    (Untyped(), InputSpec()), (TakesADict(), InputSpec()), (TakesTensorsByName(), InputSpec()),
    (TakesAnArray(), InputSpec(form="frames")), (TakesArrays(), InputSpec(form="frames")),
    (TakesATensor(), InputSpec(form="frames", type="torch", layout="NCHW")),
])
def test_a_stage_without_input_gets_what_call_annotates(model: object, expected: InputSpec) -> None:
    assert infer_input(model) == expected
    assert resolve_input(None, model) == expected


def test_an_explicit_input_wins_over_the_annotation() -> None:
    assert resolve_input({}, TakesATensor()) == InputSpec()
    assert resolve_input({"form": "frames", "dtype": "float32"}, TakesATensor()) == InputSpec(form="frames",
                                                                                            dtype="float32")


_INFERRED_IN_ENV = """
import json, sys
from workers.model_input import infer_input
from workers.model_loader import instantiate

print(json.dumps({name: infer_input(instantiate(f"{sys.argv[1]}:{name}", {})).to_dict()
                  for name in ("RadioLike", "BatchedRadioLike")}))
"""


def test_the_tutorial_models_get_nchw_tensors_where_torch_resolves_their_annotations(video_splitting: Env) -> None:
    inferred = last_json(run_in_env(video_splitting, _INFERRED_IN_ENV, str(RADIO_LIKE)))
    nchw = InputSpec(form="frames", type="torch", layout="NCHW").to_dict()
    assert inferred == {"RadioLike": nchw, "BatchedRadioLike": nchw}


def test_a_model_failing_on_what_it_received_is_told_which_input_setting_changes_it() -> None:
    failed = (None, {"stage": "batch", "type": "AttributeError", "message": "'dict' object has no attribute 'to'"})
    _, error = with_input_hint(failed, InputSpec())
    assert error is not None and error["message"] == (
        "'dict' object has no attribute 'to' (the model received a dict whose 'frames' is an (N, H, W, 3) uint8 "
        "numpy array; set the stage's input to change that: `input: {form: frames}` gives an (N, H, W, 3) uint8 "
        "numpy array; `input: {form: frames, type: torch, layout: NCHW}` gives an (N, 3, H, W) uint8 torch tensor)")
    _, error = with_input_hint(failed, InputSpec(form="frames", type="torch", layout="NCHW", dtype="float32"))
    assert error is not None and "received an (N, 3, H, W) float32 torch tensor" in error["message"]
    assert "`input: {form: dict}` gives a dict whose 'frames'" in error["message"]
    own = (None, {"stage": "batch", "type": "RuntimeError", "message": "out of memory"})
    assert with_input_hint(own, InputSpec()) == own and with_input_hint(("ok", None), InputSpec()) == ("ok", None)


def test_a_worker_reports_the_input_setting_with_the_models_failure(tmp_path: Path) -> None:
    env = ensure_env("ocr")
    spec = WorkerSpec("tensor/0", env, ModelRef("controlled_model.ControlledModel",
                                                {"env": "ocr", "returns": "as_tensor"}), (FIXTURES,))
    with WorkerHandle(spec, tmp_path, WorkerPolicy(stop=StopGrace(2, 2))) as handle:
        handle.start()
        with pytest.raises(WorkerError, match=r"'dict' object has no attribute 'to' \(the model received a dict "
                                              r"whose 'frames' is .*`input: \{form: frames, type: torch, layout: "
                                              r"NCHW\}` gives an \(N, 3, H, W\) uint8 torch tensor\)"):
            handle.call({"frames": FRAMES}, timeout=60)
