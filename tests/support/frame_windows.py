"""One pass over a video's frames cut into a split model's windows: the reference the windows a media
worker serves one request at a time (`workers.media.windows.SplitWindows`) are checked against, and what
the TransNetV2 tests feed the model to compare with its whole-video inference."""

from __future__ import annotations

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
