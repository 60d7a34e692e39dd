"""A split model's windows over a video's frames, read once, as TransNetV2's own `predict_frames` pads them.

    frames ──▶ FrameWindows ──(core_start, context + core + context)──▶ split model

The windows overlap by `context` frames on each side and are edge-padded at the video's ends: indices
before the first frame or after the last repeat that frame, so each core frame sees the neighbourhood it
would see in one whole-video call. `SplitWindows` answers for one window by its core's start, reading the
video forward only, so a media worker can serve a video's windows one request at a time.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator

import numpy as np

from models.model_interface import SplitWindow


class FrameWindows:
    """Cuts a stream of frames into a split model's windows, reading each frame once.

    Iterating yields `(core_start, window)`: `window` holds frames core_start - context up to
    core_start + core + context, where the core is `chunk_steps * step` frames (the last core is padded
    up to a multiple of `step`) and indices before the first or after the last frame repeat that frame,
    exactly the padding TransNetV2's `predict_frames` gives a whole video. Every window is a new array
    the caller may keep; this object holds only the one being filled.

    `n_frames` counts the frames read so far; when a window has just been yielded, the first
    `min(core, n_frames - core_start)` of its core frames are the video's, the rest padding.
    """

    def __init__(self, frames: Iterable[np.ndarray], window: SplitWindow, chunk_steps: int = 1) -> None:
        if window.step < 1 or window.context < 0 or chunk_steps < 1:
            raise ValueError(f"windows need step >= 1, context >= 0 and chunk_steps >= 1, got {window} "
                             f"and chunk_steps={chunk_steps}")
        self.frames = frames
        self.step = window.step
        self.context = window.context
        self.core = window.step * chunk_steps
        self.n_frames = 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        source = iter(self.frames)
        first = next(source, None)
        if first is None:
            return
        context, length = self.context, self.context + self.core + self.context
        window = np.empty((length, *np.shape(first)), dtype=np.asarray(first).dtype)
        window[: context + 1] = first
        filled, core_start, self.n_frames = context + 1, 0, 1
        while True:
            for frame in source:
                window[filled] = frame
                filled += 1
                self.n_frames += 1
                if filled == length:
                    break
            if filled < length:  # the source is exhausted: pad the last core up to whole steps
                yield from self._last(window, filled, core_start)
                return
            yield core_start, window
            following = np.empty_like(window)
            following[: 2 * context] = window[length - 2 * context:]
            window, filled, core_start = following, 2 * context, core_start + self.core

    def _last(self, window: np.ndarray, filled: int, core_start: int) -> Iterator[tuple[int, np.ndarray]]:
        """The windows left once the source is exhausted, padded with copies of the last frame: one, or two
        when the frames read after a full core spill into another."""
        real = self.n_frames - core_start
        if real <= 0:
            return
        last = window[filled - 1].copy()
        window[filled:] = last
        while True:
            core = min(self.core, -(-real // self.step) * self.step)
            yield core_start, window[: core + 2 * self.context]
            real, core_start = real - core, core_start + core
            if real <= 0:
                return
            following = np.empty_like(window)
            following[: 2 * self.context] = window[core: core + 2 * self.context]
            following[2 * self.context:] = last
            window = following


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

    def window(self, core_start: int, core: int | None) -> tuple[np.ndarray | None, int]:
        """The window whose core starts at `core_start`, and how many of its core frames are the video's."""
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
        return np.stack([self._kept[int(i) - self._kept_from] for i in indices]), real

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
