"""The contract between a model and the orchestrator.

The orchestrator never imports a model's module in its own process. It learns the model's
declarations (`conda_env_name`, `weights_names`, `id_file_mapping`, `num_gpus`, `batched`,
`split_window`, `outputs`) by instantiating the class in a child process (`workers.describe`), inside the
model's env whenever it knows that env; `setup()` and `__call__` run only inside a worker started
with the interpreter of `conda_env_name`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class SplitWindow:
    """How a split model reads a long video: in windows, so no call holds the whole video.

    Each call gets `context` frames, then a core of a multiple of `step` frames, then `context`
    frames again; the model answers for the core only. At the ends of the video the context is
    the first or last frame repeated, so every core frame sees the same neighbourhood it would
    see in one whole-video call.
    """

    step: int
    """A call's core frame count is a multiple of this."""
    context: int
    """Frames before and after the core in every call; edge-padded (first/last frame) at the ends."""


class ModelInterface(abc.ABC):
    """Base class for every model a pipeline stage can run."""

    batched: ClassVar[bool] = False
    """True: `__call__` gets a list of up to `batch_size` inputs (one per clip) and returns a list of as
    many results, in order, so a GPU model can run several clips at once. False: one input per call."""

    split_window: ClassVar[SplitWindow | None] = None
    """For split models that can read a video in windows (see `SplitWindow`); None: the whole video
    in one call."""

    outputs: ClassVar[dict[str, str] | None] = None
    """The fields of the dict `__call__` returns, each with its Arrow type, e.g. `{"text": "string",
    "embedding": "fixed_size_list<float32>[768]"}` (grammar and examples in docs/dataset.md): the clip table
    types the stage's column by it, so an empty list or a field missing from the first clips still has its
    type. None: the table infers the types from the first results and keeps them."""

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
        """Run on one input (a list of inputs when `batched`); must return data the wire protocol can
        encode (numbers, strings, bytes, lists, dicts, numpy arrays, torch tensors)."""
