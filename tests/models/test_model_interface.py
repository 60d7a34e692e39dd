"""The model-author API: one base class under both of its names, and the class-level declarations."""

from __future__ import annotations

import dataclasses

import pytest

from models import model_interface, model_utils
from models.model_interface import ModelInterface, SplitWindow


class PerClip(model_utils.ModelInterface):
    conda_env_name = "video_splitting"

    def setup(self) -> None:
        pass

    def __call__(self, batch: object) -> object:
        return batch


class Windowed(PerClip):
    batched = True
    split_window = SplitWindow(step=50, context=25)


def test_model_utils_reaches_the_same_base_class() -> None:
    assert model_utils.ModelInterface is model_interface.ModelInterface is ModelInterface
    assert isinstance(PerClip(), ModelInterface)


def test_batched_and_split_window_default_off_and_are_set_on_the_class() -> None:
    assert (PerClip.batched, PerClip.split_window) == (False, None)
    assert (Windowed().batched, Windowed().split_window) == (True, SplitWindow(50, 25))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Windowed.split_window.step = 10  # type: ignore[misc, union-attr]
