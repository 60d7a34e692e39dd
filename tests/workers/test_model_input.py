"""A stage's `input:` settings: frames handed over as the model expects, copied only when they must be.

The torch cases run in the video_splitting env's interpreter, the way a worker of that env runs them.
"""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.envs import Env
from tests.workers.conftest import run_in_env
from workers.model_input import InputSpec, adapt_input

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
    facts = run_in_env(video_splitting, _TORCH_CASES)
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
