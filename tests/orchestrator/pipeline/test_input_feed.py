"""A run's inputs found and opened as it goes (orchestrator/pipeline/media/feed.py): real video files opened by
the run's own opener, the listing's pace set by the test."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import PipelineError
from orchestrator.pipeline.media.feed import InputFeed
from orchestrator.pipeline.media.video import VideoInput, open_inputs, video_id
from tests.orchestrator.pipeline.media import write_shots
from tests.orchestrator.pipeline.runs import wait_for

BOUND_S = 30.0
"""How long a step here may take at most (each finishes in well under a second)."""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("feed")
    made = {name: folder / name for name in ("a.mp4", "b.mp4", "broken.mp4", "broken-later.mp4")}
    write_shots(made["a.mp4"], [(12, (200, 40, 40))])
    write_shots(made["b.mp4"], [(12, (40, 200, 40))])
    made["broken.mp4"].write_bytes(b"not a video")
    made["broken-later.mp4"].write_bytes(b"not one either")
    return made


def video(path: Path) -> VideoInput:
    return VideoInput(path, video_id(path))


def stop_never() -> threading.Event:
    return threading.Event()


def test_readable_videos_come_in_input_order_and_skipped_inputs_are_warned_once_the_first_is_open(files) -> None:
    """The listing pauses after its first three finds (a video, a broken file, a pattern naming nothing): the
    run has its first video while the listing waits, the two skipped inputs are warned of then (not before),
    and a broken file found later is warned of as it is found."""
    more = threading.Event()

    def listing() -> Iterator[VideoInput | tuple[str, str]]:
        yield video(files["a.mp4"])
        yield video(files["broken.mp4"])
        yield "gone/*.mp4", "no such file, folder or glob match: gone/*.mp4"
        assert more.wait(BOUND_S)
        yield video(files["broken-later.mp4"])
        yield video(files["b.mp4"])

    warned: list[str] = []
    counts: list[tuple[int, int, bool]] = []
    feed = InputFeed(listing(), open_inputs, warned.append,
                     on_found=lambda found, unreadable, listing: counts.append((found, unreadable, listing)))
    feed.start()
    wait_for(lambda: len(feed.failures) == 2, "the two skipped inputs", BOUND_S)
    assert warned == []  # nothing is warned of before the run knows it has a video
    assert feed.wait_first() and len(warned) == 2
    assert any("broken.mp4" in line for line in warned) and any("gone/*.mp4" in line for line in warned)
    followed = feed.follow(stop_never())
    assert next(followed).path == files["a.mp4"]
    assert not feed.done.is_set() and counts[-1][::2] == (2, True)  # the listing waits: the run has a video
    more.set()
    assert [v.path for v in followed] == [files["b.mp4"]]
    assert feed.done.is_set() and counts[-1] == (4, 2, False) and feed.to_do() == 2 and feed.unopened() == []
    assert [v.path for v in feed.videos] == [files["a.mp4"], files["b.mp4"]]
    assert [v.path for v, _ in feed.unreadable] == [files["broken.mp4"], files["broken-later.mp4"]]
    assert len(warned) == 3 and "broken-later.mp4" in warned[2] and len(feed.failures) == 3


def test_inputs_without_a_readable_video_are_not_warned_of_but_left_for_the_one_error(files) -> None:
    warned: list[str] = []
    feed = InputFeed(iter([video(files["broken.mp4"]), ("gone.mp4", "no such file")]), open_inputs, warned.append)
    assert not feed.start().wait_first()
    assert warned == [] and {f.video for f in feed.failures} == {str(files["broken.mp4"]), "gone.mp4"}


def test_an_opener_that_fails_ends_the_feed_with_its_error(files) -> None:
    """The first batch opens; the opener fails on the next: the run reads its first video, then the feed
    stops it with the opener's error instead of ending as if the inputs were all read."""
    more = threading.Event()
    opened: list[int] = []

    def listing() -> Iterator[VideoInput]:
        yield video(files["a.mp4"])
        assert more.wait(BOUND_S)
        yield video(files["b.mp4"])

    def opener(batch: list[VideoInput]) -> tuple[list[VideoInput], list[tuple[VideoInput, str]]]:
        opened.append(len(batch))
        if len(opened) > 1:
            raise PipelineError("could not open the inputs on the cluster")
        return open_inputs(batch)

    feed = InputFeed(listing(), opener, lambda line: None).start()
    assert feed.wait_first()
    followed = feed.follow(stop_never())
    assert next(followed).path == files["a.mp4"]
    more.set()
    with pytest.raises(PipelineError, match="reading the inputs failed: could not open the inputs on the cluster"):
        next(followed)


def test_a_closed_feed_stops_listing_and_opening_and_never_runs_far_ahead(files) -> None:
    """An endless listing: the feed finds at most what its bounds hold ahead of the run, and both of its
    threads end once it is closed."""
    listed = itertools.count()

    def endless() -> Iterator[VideoInput]:
        for index in listed:
            yield VideoInput(files["a.mp4"], f"v{index}")

    def opener(batch: list[VideoInput]) -> tuple[list[VideoInput], list[tuple[VideoInput, str]]]:
        return batch, []

    stop = threading.Event()
    feed = InputFeed(endless(), opener, lambda line: None, list_ahead=50, open_ahead=10).start()
    assert feed.wait_first()
    taken = list(itertools.islice(feed.follow(stop), 5))
    assert [v.video_id for v in taken] == [f"v{i}" for i in range(5)]
    feed.close(BOUND_S)
    assert not [thread.name for thread in feed.threads if thread.is_alive()]
    # taken + ready to take + one batch in hand + found ahead + one in hand
    assert 5 <= feed.found <= 5 + 10 + 16 + 50 + 1
    assert {v.video_id for v in feed.unopened()} == {f"v{i}" for i in range(feed.found)} - {
        v.video_id for v in feed.videos}
    stop.set()
    assert list(feed.follow(stop)) == []


def test_a_feed_of_videos_already_open_holds_them_all_at_once(files) -> None:
    """A redo's videos (read from the output folder) are all the writer's at once, however many there are,
    whether or not the run takes them from the feed."""
    known = [VideoInput(files["a.mp4"], f"v{index}") for index in range(500)]
    counts: list[tuple[int, int, bool]] = []
    feed = InputFeed.opened(known, lambda found, unreadable, listing: counts.append((found, unreadable, listing)))
    assert feed.videos == known and feed.done.is_set() and counts == [(500, 0, False)] and feed.wait_first()
    assert list(feed.follow(stop_never())) == known
