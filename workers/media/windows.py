"""A split model's windows over a video's frames, as TransNetV2's own `predict_frames` pads them.

    frames ──▶ SplitWindows.window_frames(core start, core) ──(context + core + context)──▶ split model

The windows overlap by `context` frames on each side and are edge-padded at the video's ends: indices
before the first frame or after the last repeat that frame, so each core frame sees the neighbourhood it
would see in one whole-video call. `SplitWindows` answers for one window by its core's start, reading the
video forward only, so a media worker serves a video's windows one request at a time.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import numpy as np

from models.model_interface import SplitWindow


class SplitWindows:
    """One video's windows by the start of their core, read forward only, for a media worker that answers a
    split request at a time: each answer is the window `FrameWindows` gives there. Frames before the window
    asked for are dropped; a window earlier than that needs a new reader (`serves` says whether this one can).

    A request names a core of `core` frames (None: up to the video's end). Where the video ends inside it,
    the core is cut to the real frames padded up to whole steps and the last frame repeats; a request after
    the end gets no frames. So a video whose container declares its length is asked for its windows in any
    number of requests known in advance, the last one unbounded, and gets the scenes one pass would."""

    def __init__(self, images: Iterator[np.ndarray], window: SplitWindow) -> None:
        self.step, self.context = window.step, window.context
        self._images = images
        self._kept: collections.deque[np.ndarray] = collections.deque()
        self._kept_from = 0
        """The frame index of `_kept[0]`."""
        self.n_read = 0
        self.ended = False

    def serves(self, core_start: int) -> bool:
        return max(core_start - self.context, 0) >= self._kept_from

    def window_frames(self, core_start: int, core: int | None) -> tuple[list[np.ndarray] | None, int]:
        """The frames of the window whose core starts at `core_start` (None past the video's end), and how many
        of its core frames are the video's."""
        if not self.serves(core_start):
            raise ValueError(f"window at {core_start} is behind this reader (it keeps frames from {self._kept_from})")
        low = max(core_start - self.context, 0)
        while self._kept and self._kept_from < low:
            self._kept.popleft()
            self._kept_from += 1
        if not self._kept:
            self._kept_from = max(self._kept_from, low)
        self._read_until(None if core is None else core_start + core + self.context)
        real = self.n_read - core_start if core is None else min(core, self.n_read - core_start)
        if real <= 0:
            return None, 0
        length = core if core is not None and real >= core else -(-real // self.step) * self.step
        indices = np.clip(np.arange(core_start - self.context, core_start + length + self.context), 0, self.n_read - 1)
        return [self._kept[int(i) - self._kept_from] for i in indices], real

    def _read_until(self, stop: int | None) -> None:
        """Read on to frame `stop` (None: the end), keeping the frames from `_kept_from` on."""
        while not self.ended and (stop is None or self.n_read < stop):
            image = next(self._images, None)
            if image is None:
                self.ended = True
                return
            if self.n_read >= self._kept_from:
                self._kept.append(image)
            self.n_read += 1
