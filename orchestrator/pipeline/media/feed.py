"""A run's inputs, listed and opened while the run works: the first video starts as soon as it is open, not
once a bucket of 10,000 keys has been listed and every object opened.

    find_inputs ─▶ list thread ─▶ (≤ LIST_AHEAD found) ─▶ open thread: batches of ≤ BATCH, opened by `opener`
                                                          ─▶ (≤ OPEN_AHEAD readable) ─▶ follow(): the run's plan

Listing runs ahead of the opens (keys cost a few hundred bytes each, and the run's total shows early); opens
run ahead of the run by a bounded few, so a stopped run has opened little it did not use. Both threads stop
when the feed is closed: every wait here is bounded and watches that.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from orchestrator.errors import PipelineError
from orchestrator.pipeline.media.video import VideoInput
from orchestrator.pipeline.summary import Failure

LIST_AHEAD = 100_000
"""Videos found and not yet opened, at most: beyond it the listing waits for the opens."""
BATCH = 16
"""Videos handed to the opener at once, at most (fewer when the listing has no more yet)."""
OPEN_AHEAD = 64
"""Readable videos opened and not yet taken by the run, at most."""
POLL_S = 0.2
"""How often a wait here looks whether the feed was closed or the run stopped."""
CLOSE_S = 5.0
"""How long closing waits for the feed's threads (a batch of opens under way ends on its own after it)."""

Opener = Callable[[list[VideoInput]], tuple[list[VideoInput], list[tuple[VideoInput, str]]]]
"""Opens a batch of videos: the readable ones (fingerprinted, with what their container declares) and
(video, reason) for the others, both in input order (`open_inputs`, or a cluster's on one of its nodes)."""
_END = object()


class InputFeed:
    """The inputs of one run as they are found and opened. `videos` and `unreadable` grow in input order
    (the writer reads them as they are); `failures` receives an entry for each input that names nothing
    or cannot be read, warned of once the run has a video to start with (before that, a run with none
    reports them all in its one error instead)."""

    def __init__(self, found: Iterable[VideoInput | tuple[str, str]], opener: Opener, warn: Callable[[str], None],
                 failures: list[Failure] | None = None,
                 on_found: Callable[[int, int, bool], None] = lambda found, unreadable, listing: None, *,
                 list_ahead: int = LIST_AHEAD, open_ahead: int = OPEN_AHEAD) -> None:
        """`found`: what `find_inputs` yields; `on_found(found, unreadable, still_listing)` hears of each video
        found, of those found unreadable, and of the listing's end."""
        self.videos: list[VideoInput] = []
        self.unreadable: list[tuple[VideoInput, str]] = []
        self.failures = failures if failures is not None else []
        self.found_videos: list[VideoInput] = []
        """Every video found so far, opened or not."""
        self._source, self._opener, self._warn, self._on_found = found, opener, warn, on_found
        self._listed: queue.Queue[Any] = queue.Queue(list_ahead)
        self._ready: queue.Queue[Any] = queue.Queue(open_ahead)
        self.threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self._first = threading.Event()
        """Set once a readable video is open, or the feed has ended without one."""
        self._warning = threading.Lock()
        self._warn_now = False
        self._error: BaseException | None = None
        self._listing_over = False
        self._reporting = threading.Lock()
        self.done = threading.Event()
        """Set once every input was found and opened (or the feed failed)."""

    @classmethod
    def opened(cls, videos: list[VideoInput],
               on_found: Callable[[int, int, bool], None] = lambda found, unreadable, listing: None) -> InputFeed:
        """A feed whose videos are all known and open already (a redo's, from the output folder)."""
        feed = cls((), lambda batch: (batch, []), lambda line: None, on_found=on_found, open_ahead=len(videos) + 1)
        feed.videos += videos
        feed.found_videos += videos
        for video in [*videos, _END]:
            feed._ready.put(video)
        feed._first.set()
        feed.done.set()
        on_found(feed.found, 0, False)
        return feed

    @property
    def found(self) -> int:
        """Videos found so far."""
        return len(self.found_videos)

    def to_do(self) -> int:
        """The run's videos: those found, less the ones found unreadable (all of them once the feed is done)."""
        return self.found - len(self.unreadable)

    def start(self) -> InputFeed:
        for name, target in (("list-inputs", self._list), ("open-inputs", self._open)):
            self.threads.append(threading.Thread(target=self._guarded, args=(target,), name=name, daemon=True))
            self.threads[-1].start()
        return self

    def unopened(self) -> list[VideoInput]:
        """The videos found that were not opened yet (a run stopped early counts their finished parts)."""
        opened = {video.video_id for video in self.videos} | {video.video_id for video, _ in self.unreadable}
        return [video for video in self.found_videos if video.video_id not in opened]

    def close(self, wait_s: float = CLOSE_S) -> None:
        """Stop listing and opening, waiting at most `wait_s` for the threads to end (one inside a request
        or a batch ends with it); nothing is warned of once closed."""
        self._closed.set()
        deadline = time.monotonic() + wait_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def wait_first(self) -> bool:
        """Wait until the first readable video is open (True; the inputs skipped so far are warned of then,
        and later ones as they come) or every input was read without one (False). Raises the feed's error."""
        while not self._first.wait(POLL_S):
            pass
        if self._error is not None:
            raise self._error
        if not self.videos:
            return False
        with self._warning:
            self._warn_now = True
            for failure in list(self.failures):
                self._warn(f"skipped {failure.line()}")
        return True

    def follow(self, stop: threading.Event) -> Iterator[VideoInput]:
        """The readable videos in input order, as they are opened, until every input is through (or `stop`)."""
        while not stop.is_set():
            try:
                video = self._ready.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if video is _END:
                if self._error is not None:
                    raise PipelineError(f"reading the inputs failed: {self._error}") from self._error
                return
            yield video

    def _guarded(self, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # an opener's or a listing's failure ends the feed with its error
            self._error = self._error or exc
            self._first.set()
            self.done.set()
            self._put(self._ready, _END)

    def _put(self, into: queue.Queue[Any], item: Any) -> bool:
        """Put, waiting for room while the feed is open; False once it was closed."""
        while not self._closed.is_set():
            try:
                into.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _list(self) -> None:
        for found in self._source:
            if self._closed.is_set():
                return
            if isinstance(found, tuple):
                self._fail(Failure(*found))
                continue
            self.found_videos.append(found)
            self._report()
            if not self._put(self._listed, found):
                return
        self._listing_over = True
        self._report()
        self._put(self._listed, _END)

    def _open(self) -> None:
        ended = False
        while not ended and not self._closed.is_set():
            try:
                batch = [self._listed.get(timeout=POLL_S)]
            except queue.Empty:
                continue
            while len(batch) < BATCH and batch[-1] is not _END:
                try:
                    batch.append(self._listed.get_nowait())
                except queue.Empty:
                    break
            ended = batch[-1] is _END
            videos = [video for video in batch if video is not _END]
            readable, unreadable = self._opener(videos) if videos else ([], [])
            self.unreadable += unreadable
            for video, reason in unreadable:
                self._fail(Failure(str(video.path), reason))
            if unreadable:
                self._report()
            for video in readable:
                self.videos.append(video)
                self._first.set()
                if not self._put(self._ready, video):
                    return
        if ended:
            self.done.set()
            self._first.set()
            self._put(self._ready, _END)

    def _report(self) -> None:
        """Tell `on_found` the counts as they are now: the last call always has the latest (both threads call
        it after each change, and the counts are read under the lock)."""
        with self._reporting:
            self._on_found(self.found, len(self.unreadable), not self._listing_over)

    def _fail(self, failure: Failure) -> None:
        with self._warning:
            self.failures.append(failure)
            if self._warn_now and not self._closed.is_set():
                self._warn(f"skipped {failure.line()}")


def follow(videos: Sequence[VideoInput] | InputFeed, stop: threading.Event) -> Iterator[VideoInput]:
    """A run's videos, whether all known (a list) or still being found (a feed)."""
    return videos.follow(stop) if isinstance(videos, InputFeed) else iter(videos)
