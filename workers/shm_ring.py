"""A ring of fixed-size shared-memory slots that carries big arrays from the parent to a worker on one host.

    parent: ShmRingWriter --try_write--> slot k --(slot k named in a message)--> worker: ShmRingReader.view

The parent owns the segment and all slot bookkeeping: a slot is taken by `try_write` and handed back with
`release` when the reply to the request that used it arrives or the worker dies, so no lock crosses the
process boundary. The worker maps the segment read-only; its views cannot alter the parent's data.
A segment is named `orch-<owner tag>-<random>` (`workers.owner_lock`), so the rings of a parent that died
without unlinking them are found and removed by the next ring made on the host, and no live parent's ring is.
"""

from __future__ import annotations

import mmap
import os
import secrets
import weakref
from collections.abc import Iterable, Sequence
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from workers.owner_lock import owner_tag, remove_orphans
from workers.tensor_codec import ArrayFormatError, view_array

SHM_DIR = "/dev/shm"
NAME_PREFIX = "orch-"
_MIB = 1024 * 1024


class ShmUnavailable(OSError):
    """Shared memory cannot hold the ring on this host; callers send arrays as frames instead."""


class ShmRingWriter:
    """The parent's side: one segment of `n_slots` slots of `slot_bytes` bytes each.

    Not thread-safe: it belongs to the thread that encodes and sends messages. The segment is unlinked by
    `close`, or when the writer is garbage-collected or the interpreter exits.
    """

    def __init__(self, n_slots: int, slot_bytes: int) -> None:
        if n_slots < 1 or slot_bytes < 1:
            raise ValueError(f"a ring needs at least one slot of one byte, got {n_slots} x {slot_bytes}")
        size = n_slots * slot_bytes
        remove_orphaned_segments()
        _check_free_space(size)
        try:
            name = f"{NAME_PREFIX}{owner_tag(Path(SHM_DIR))}-{secrets.token_hex(6)}"
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except OSError as err:
            raise ShmUnavailable(f"cannot create a {size / _MIB:.1f} MiB shared-memory segment: {err}") from err
        self._name = self._shm.name
        self._n_slots = n_slots
        self._slot_bytes = slot_bytes
        self._free = list(range(n_slots - 1, -1, -1))
        self.bytes_written = 0
        """Bytes this process has copied into the ring."""
        self._taken: set[int] = set()
        self._finalizer = weakref.finalize(self, _destroy, self._shm)

    @property
    def name(self) -> str:
        """The segment's name, which the worker passes to `ShmRingReader.attach`."""
        return self._name

    @property
    def n_slots(self) -> int:
        return self._n_slots

    @property
    def slot_bytes(self) -> int:
        return self._slot_bytes

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def try_write(self, arr: np.ndarray) -> int | None:
        """Copy `arr` in C order into a free slot and return the slot, or None when none is free or it is too big."""
        if not self._finalizer.alive:
            raise ValueError(f"shared-memory ring {self._name} is closed")
        if arr.dtype.hasobject:
            raise TypeError("object arrays hold pointers into this process and cannot go through shared memory")
        if arr.nbytes > self._slot_bytes or not self._free:
            return None
        slot = self._free.pop()
        target = np.ndarray(arr.shape, arr.dtype, buffer=self._shm.buf, offset=slot * self._slot_bytes)
        np.copyto(target, arr, casting="no")
        self.bytes_written += arr.nbytes
        self._taken.add(slot)
        return slot

    def release(self, slots: Iterable[int]) -> None:
        """Hand slots back; a slot that is not taken is ignored, so releasing twice is harmless."""
        for slot in slots:
            if slot in self._taken:
                self._taken.remove(slot)
                self._free.append(slot)

    def close(self) -> None:
        """Unmap and unlink the segment; later calls do nothing."""
        self._finalizer()


class ShmRingReader:
    """The worker's side: a read-only mapping of the parent's segment.

    The segment is opened as a file under /dev/shm rather than through `SharedMemory`, whose resource
    tracker (before Python 3.13) would unlink the parent's segment when the worker exits.
    """

    def __init__(self, name: str, n_slots: int, slot_bytes: int, mapping: mmap.mmap) -> None:
        self._name = name
        self._n_slots = n_slots
        self._slot_bytes = slot_bytes
        self._buffer: memoryview | None = memoryview(mapping)

    @classmethod
    def attach(cls, name: str, n_slots: int, slot_bytes: int) -> ShmRingReader:
        """Map the segment the parent's `ShmRingWriter` called `name`."""
        if not name.startswith(NAME_PREFIX) or "/" in name or "\0" in name:
            raise ValueError(f"{name!r} is not a ring segment name (expected {NAME_PREFIX}<hex>)")
        if n_slots < 1 or slot_bytes < 1:
            raise ValueError(f"a ring needs at least one slot of one byte, got {n_slots} x {slot_bytes}")
        size = n_slots * slot_bytes
        try:
            fd = os.open(os.path.join(SHM_DIR, name), os.O_RDONLY)
        except OSError as err:
            raise ShmUnavailable(
                f"cannot open shared-memory ring {name}: {err}; is the parent running on this host?"
            ) from err
        try:
            actual = os.fstat(fd).st_size
            if actual < size:
                raise ShmUnavailable(f"shared-memory ring {name} holds {actual} bytes, expected {size}")
            mapping = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        return cls(name, n_slots, slot_bytes, mapping)

    @property
    def name(self) -> str:
        return self._name

    def view(self, slot: int, dtype: np.dtype, shape: Sequence[int], strides: Sequence[int], nbytes: int) -> np.ndarray:
        """A read-only, zero-copy array on `slot`; its values stay those written until the parent releases the slot."""
        if self._buffer is None:
            raise ArrayFormatError(f"shared-memory ring {self._name} is closed")
        if not 0 <= slot < self._n_slots or not 0 <= nbytes <= self._slot_bytes:
            raise ArrayFormatError(
                f"slot {slot} with {nbytes} bytes is outside the ring of {self._n_slots} slots of "
                f"{self._slot_bytes} bytes"
            )
        start = slot * self._slot_bytes
        return view_array(self._buffer[start : start + nbytes], dtype, shape, strides)

    def close(self) -> None:
        """Stop handing out views. Views already handed out keep the mapping alive, and it is unmapped
        when the last of them is freed, so closing never leaves an array pointing at unmapped memory."""
        self._buffer = None


def remove_orphaned_segments() -> list[str]:
    """Unlink the rings of processes that have exited (a parent killed with SIGKILL cannot clean up);
    returns their names. A ring's name carries its creator's owner tag, whose lock says whether it lives."""
    return [path.name for path in remove_orphans(Path(SHM_DIR))]


def _check_free_space(size: int) -> None:
    try:
        stats = os.statvfs(SHM_DIR)
    except OSError as err:
        raise ShmUnavailable(f"no shared memory at {SHM_DIR} on this host: {err}") from err
    free = stats.f_bavail * stats.f_frsize
    if free < size:
        raise ShmUnavailable(
            f"{SHM_DIR} has {free / _MIB:.0f} MiB free, the ring needs {size / _MIB:.0f} MiB: "
            "lower ring slots or slot size"
        )


def _destroy(shm: shared_memory.SharedMemory) -> None:
    # Unlink first: the name must go even if a view still pins the mapping (close then raises BufferError,
    # and the memory itself is freed when the last view goes).
    try:
        shm.unlink()
    except FileNotFoundError:
        pass
    try:
        shm.close()
    except BufferError:
        pass
