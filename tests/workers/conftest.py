"""Fixtures for the worker-side tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workers.shm_ring import ShmRingReader, ShmRingWriter


@pytest.fixture
def ring() -> Iterator[tuple[ShmRingWriter, ShmRingReader]]:
    """A writer with four 8 MiB slots (room for a 1920x1080x3 frame each) and a reader attached to it."""
    writer = ShmRingWriter(n_slots=4, slot_bytes=8 * 1024 * 1024)
    reader = ShmRingReader.attach(writer.name, writer.n_slots, writer.slot_bytes)
    yield writer, reader
    reader.close()
    writer.close()

