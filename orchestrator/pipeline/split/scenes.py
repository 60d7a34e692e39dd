"""Shot detection over a stream: stitch the split model's answers for its windows back into scenes.

    windows (workers.media.windows, cut by a media worker) ──▶ split model
                                                                │ one transition flag per core frame
    clips ◀── scenes, each as soon as it closes ◀── SceneStitcher ◀─────┘

The windows overlap by `context` frames on each side and are edge-padded at the video's ends exactly as
TransNetV2's own `predict_frames` pads a whole video, and `SceneStitcher` reproduces its
`predictions_to_scenes`, so the scenes equal whole-video inference on the same frames while memory
holds one window, whatever the video's length. `check_scenes` validates what a model that reads a
whole video at once returns instead.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

Scene = tuple[int, int]
"""First and last frame of a scene, both inclusive."""


class SceneStitcher:
    """Scenes from per-frame transition flags fed in order, each returned as soon as it is closed.

    Feeding the flags in any chunks gives what TransNetV2's `predictions_to_scenes` gives on all of them
    at once: a scene ends at the first frame of a run of transitions, the next starts at the first frame
    after the run, a run at the very start opens no scene, a run at the very end closes the last scene,
    and a video of transitions only is one scene. A video without frames has no scene (the reference
    returns the impossible `[0, -1]` there).
    """

    def __init__(self) -> None:
        self._fed = 0
        self._previous = False
        self._start = 0
        self._closed = 0

    @property
    def frames_fed(self) -> int:
        return self._fed

    def feed(self, transitions: np.ndarray) -> list[Scene]:
        """Take the flags of the next frames; return the scenes they close, in order."""
        flags = np.asarray(transitions, dtype=bool).reshape(-1)
        closed: list[Scene] = []
        # Only the frames where the flag changes matter: a rise ends a scene, a fall starts one.
        changes = np.flatnonzero(np.diff(flags, prepend=self._previous))
        for offset in changes.tolist():
            index = self._fed + offset
            if not flags[offset]:
                self._start = index
            elif index != 0:
                closed.append((self._start, index))
        if len(flags):
            self._previous = bool(flags[-1])
        self._fed += len(flags)
        self._closed += len(closed)
        return closed

    def finish(self, n_frames: int) -> list[Scene]:
        """The scenes still open once every frame has been fed; `n_frames` must be the frames fed."""
        if n_frames != self._fed:
            raise ValueError(f"finish({n_frames}) after {self._fed} frames were fed: feed every frame of the "
                             "video, and only those (trim the padding of the last window)")
        if n_frames == 0:
            return []
        if not self._previous:
            self._closed += 1
            return [(self._start, n_frames - 1)]
        return [] if self._closed else [(0, n_frames - 1)]


def check_scenes(scenes: Any, n_frames: int) -> list[Scene]:
    """A split model's whole-video `scenes` as (start, end) pairs, or a ValueError naming the first problem.

    Scenes must be inclusive frame ranges inside [0, n_frames), sorted and not overlapping; frames in
    no scene (transitions) are allowed.
    """
    if not isinstance(scenes, (list, tuple)):
        raise ValueError(f"'scenes' must be a list of [start, end] pairs, got {type(scenes).__name__}")
    checked: list[Scene] = []
    for index, scene in enumerate(scenes):
        if not isinstance(scene, (list, tuple)) or len(scene) != 2:
            raise ValueError(f"scene {index} must be a [start, end] pair, got {scene!r}")
        start, end = scene
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (start, end)):
            raise ValueError(f"scene {index} has non-integer bounds {scene!r}")
        start, end = int(start), int(end)
        if start > end:
            raise ValueError(f"scene {index} starts after it ends: {scene!r}")
        if start < 0 or end >= n_frames:
            raise ValueError(f"scene {index} {scene!r} lies outside the video's frames [0, {n_frames})")
        if checked and start <= checked[-1][1]:
            problem = "is out of order after" if start < checked[-1][0] else "overlaps"
            raise ValueError(f"scene {index} {scene!r} {problem} scene {index - 1} {list(checked[-1])}")
        checked.append((start, end))
    return checked
