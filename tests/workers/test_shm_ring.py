"""The shared-memory ring: slot bookkeeping in the parent, read-only views in the worker, no leaked segments."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workers.shm_ring import (
    NAME_PREFIX,
    SHM_DIR,
    ShmRingReader,
    ShmRingWriter,
    ShmUnavailable,
    remove_orphaned_segments,
)
from workers.tensor_codec import ArrayFormatError, c_strides

Ring = tuple[ShmRingWriter, ShmRingReader]


def read_back(reader: ShmRingReader, slot: int, arr: np.ndarray) -> np.ndarray:
    return reader.view(slot, arr.dtype, arr.shape, c_strides(arr.shape, arr.itemsize), arr.nbytes)


def test_writer_names_its_segment_and_close_unlinks_it() -> None:
    writer = ShmRingWriter(n_slots=2, slot_bytes=4096)
    segment = Path(SHM_DIR, writer.name)
    assert writer.name.startswith("orch-") and segment.exists()
    assert (writer.n_slots, writer.slot_bytes, writer.free_slots) == (2, 4096, 2)
    writer.close()
    writer.close()
    assert not segment.exists()
    with pytest.raises(ShmUnavailable, match=f"cannot open shared-memory ring {writer.name}"):
        ShmRingReader.attach(writer.name, 2, 4096)
    with pytest.raises(ValueError, match="is closed"):
        writer.try_write(np.zeros(1))


def test_forgotten_writer_is_unlinked_when_collected() -> None:
    writer = ShmRingWriter(n_slots=1, slot_bytes=4096)
    segment = Path(SHM_DIR, writer.name)
    del writer
    gc.collect()
    assert not segment.exists()


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12, dtype="<i4").reshape(3, 4),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.arange(60, dtype=np.uint16).reshape(6, 10)[::2, ::3],
        np.array(7.5),
        np.zeros((0, 4)),
    ],
    ids=["c", "fortran", "strided", "0-d", "empty"],
)
def test_written_arrays_read_back_exactly_as_read_only_views(ring: Ring, arr: np.ndarray) -> None:
    writer, reader = ring
    slot = writer.try_write(arr)
    assert slot is not None
    got = read_back(reader, slot, arr)
    assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)
    assert got.flags.c_contiguous and not got.flags.writeable
    with pytest.raises(ValueError):
        got.flags.writeable = True


def test_views_see_the_shared_slot_without_copying(ring: Ring) -> None:
    writer, reader = ring
    slot = writer.try_write(np.zeros(4, dtype=np.uint8))
    assert slot is not None
    view = reader.view(slot, np.dtype(np.uint8), [4], [1], 4)
    writer.release([slot])
    assert writer.try_write(np.full(4, 9, dtype=np.uint8)) == slot
    assert view.tolist() == [9, 9, 9, 9]


def test_slots_are_taken_until_released(ring: Ring) -> None:
    writer, _ = ring
    small = np.ones(16, dtype=np.uint8)
    slots = [writer.try_write(small) for _ in range(writer.n_slots)]
    assert sorted(slots) == list(range(writer.n_slots)) and writer.free_slots == 0
    assert writer.try_write(small) is None
    writer.release(slots[:2])
    writer.release(slots[:2])
    writer.release([99, -1])
    assert writer.free_slots == 2
    writer.release(slots)
    writer.release(slots)
    assert writer.free_slots == writer.n_slots


def test_arrays_larger_than_a_slot_are_not_written(ring: Ring) -> None:
    writer, _ = ring
    assert writer.try_write(np.zeros(writer.slot_bytes + 1, dtype=np.uint8)) is None
    assert writer.free_slots == writer.n_slots
    with pytest.raises(TypeError, match="object arrays"):
        writer.try_write(np.array([object()]))


def test_ring_that_does_not_fit_in_dev_shm_is_refused() -> None:
    with pytest.raises(
        ShmUnavailable, match=r"/dev/shm has \d+ MiB free, the ring needs 1048576 MiB: lower ring slots"
    ):
        ShmRingWriter(n_slots=1024, slot_bytes=1 << 30)


@pytest.mark.parametrize(("n_slots", "slot_bytes"), [(0, 4096), (4, 0)])
def test_empty_rings_are_refused(n_slots: int, slot_bytes: int) -> None:
    with pytest.raises(ValueError, match="at least one slot of one byte"):
        ShmRingWriter(n_slots, slot_bytes)


@pytest.mark.parametrize(
    ("slot", "shape", "strides", "nbytes", "message"),
    [
        (4, [4], [1], 4, "slot 4 with 4 bytes is outside the ring of 4 slots"),
        (-1, [4], [1], 4, "slot -1 with 4 bytes is outside"),
        (0, [4], [1], 8 * 1024 * 1024 + 1, "slot 0 with 8388609 bytes is outside"),
        (0, [8], [1], 4, "holds 8 bytes, more than its 4-byte buffer"),
        (0, [2], [4], 4, "spans bytes 0..5 of a 4-byte buffer"),
    ],
)
def test_reader_refuses_views_outside_a_slot(
    ring: Ring, slot: int, shape: list[int], strides: list[int], nbytes: int, message: str
) -> None:
    with pytest.raises(ArrayFormatError, match=message):
        ring[1].view(slot, np.dtype(np.uint8), shape, strides, nbytes)


def test_views_outlive_a_closed_reader(ring: Ring) -> None:
    writer, reader = ring
    arr = np.arange(1000, dtype=np.int64)
    slot = writer.try_write(arr)
    assert slot is not None
    view = read_back(reader, slot, arr)
    reader.close()
    reader.close()
    assert np.array_equal(view, arr)
    with pytest.raises(ArrayFormatError, match="is closed"):
        read_back(reader, slot, arr)


def test_reader_refuses_foreign_names_and_short_segments(ring: Ring) -> None:
    writer, _ = ring
    with pytest.raises(ValueError, match="is not a ring segment name"):
        ShmRingReader.attach("orch-../../etc/passwd", 1, 1)
    with pytest.raises(ShmUnavailable, match="holds 33554432 bytes, expected 67108864"):
        ShmRingReader.attach(writer.name, writer.n_slots * 2, writer.slot_bytes)


WORKER = """
import sys
from multiprocessing import resource_tracker
import numpy as np
from workers.shm_ring import ShmRingReader
reader = ShmRingReader.attach(sys.argv[1], 4, 8 * 1024 * 1024)
view = reader.view(int(sys.argv[2]), np.dtype("<i8"), [1000], [8], 8000)
reader.close()
print(int(view.sum()), resource_tracker._resource_tracker._pid)
"""


def test_worker_process_reads_a_slot_and_leaves_the_segment_to_the_parent(ring: Ring) -> None:
    writer, _ = ring
    slot = writer.try_write(np.arange(1000, dtype=np.int64))
    result = subprocess.run(
        [sys.executable, "-c", WORKER, writer.name, str(slot)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(sum(range(1000))), "None"]
    assert result.stderr == ""
    assert Path(SHM_DIR, writer.name).exists()


RING_OWNER = """
import sys
from workers.shm_ring import ShmRingWriter
ring = ShmRingWriter(n_slots=1, slot_bytes=64)
print(ring.name, flush=True)
sys.stdin.read()
"""


def test_segments_of_exited_creators_are_removed_live_and_unowned_ones_kept() -> None:
    owner = subprocess.Popen([sys.executable, "-c", RING_OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
    orphan = Path(SHM_DIR) / owner.stdout.readline().strip()  # type: ignore[union-attr]
    os.killpg(owner.pid, signal.SIGKILL)  # with its resource tracker: nothing is left to clean up after it
    owner.wait()
    unowned = Path(SHM_DIR) / f"{NAME_PREFIX}{owner.pid}-deadbeef"  # no owner lock: not ours to judge
    unowned.write_bytes(b"x")
    try:
        assert orphan.exists()
        writer = ShmRingWriter(n_slots=1, slot_bytes=64)
        try:
            assert not orphan.exists() and unowned.exists()
            assert (Path(SHM_DIR) / writer.name).exists()
            assert remove_orphaned_segments() == []
        finally:
            writer.close()
    finally:
        unowned.unlink()
        orphan.unlink(missing_ok=True)
