"""The contract between a model and the orchestrator.

The parent process instantiates a model only to read its declarations (`conda_env_name`,
`weights_names`, `id_file_mapping`, `num_gpus`); `setup()` and `__call__` run only inside a
worker started with the interpreter of `conda_env_name`, where the guarded imports resolve.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class SplitWindow:
    """How a split model reads a video: in windows the parent cuts, instead of the whole video at once.

    Every call gets `context` frames, then a core whose length is a multiple of `step`, then `context`
    frames; at the video's ends the context is filled with copies of the first or last frame. The model
    answers for the core frames only, so no frame's answer depends on where the parent cut.
    """

    step: int
    """A call's core frame count is a multiple of this."""
    context: int
    """Frames before and after the core in every call; edge-padded (first/last frame) at the ends."""


class ModelInterface(abc.ABC):
    """Base class for every model a pipeline stage can run."""

    split_window: ClassVar[SplitWindow | None] = None
    """Set by split models that read a video in windows (see `SplitWindow`)."""

    @property
    @abc.abstractmethod
    def conda_env_name(self) -> str:
        """Name of the environment under `envs/` this model must run in."""

    @property
    def weights_names(self) -> list[str]:
        """Names of the weight sets this model needs (usually hub repo ids); none by default."""
        return []

    @property
    def id_file_mapping(self) -> dict[str, list[str] | None]:
        """For each weights name, the files needed from it; `None` means all files."""
        return {name: None for name in self.weights_names}

    @property
    def num_gpus(self) -> float:
        """GPUs one replica needs; fractions let replicas share a GPU."""
        return 1.0

    @abc.abstractmethod
    def setup(self) -> None:
        """Load weights and build the model; runs once per worker, inside the environment."""

    @abc.abstractmethod
    def __call__(self, batch: Any) -> Any:
        """Run on one batch; must return data the wire protocol can encode (numbers,
        strings, bytes, lists, dicts, numpy arrays, torch tensors)."""
