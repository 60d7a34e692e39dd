"""Frames that stay in shared memory from the process that decoded them to the model that reads them.

    media worker: SharedFramesDir.create(name, shape) ─▶ fills the mapped array ─▶ replies SharedFrames(name…)
    orchestrator: forwards the SharedFrames reference (a few bytes) in a model's request; unlinks it once used
    model worker: the protocol's decoder maps the file read-only ─▶ the model gets a numpy view, no copy

The orchestrator never maps a segment: it moves names. A segment lives in the run's frames folder,
`/dev/shm/orch-frames-<owner tag>-<random>/`, named by what it holds (deterministic per request, so a retry
after a death rewrites the same file instead of leaking one); the folder goes with its run, and the folder
of a run killed without cleaning up is removed by the next run on the host (`workers.owner_lock`).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.owner_lock import owner_tag, remove_orphans

SHM_ROOT = Path("/dev/shm")
FRAMES_PREFIX = "orch-frames-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


class SharedFramesError(ValueError):
    """A reference that names no segment of the frames folder, or does not match the file it names."""


class SharedFramesFull(OSError):
    """The frames folder's file system has no room for a segment."""


@dataclass(frozen=True)
class SharedFrames:
    """A C-order array held in a file of the run's frames folder: what travels instead of its bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


class SharedFramesDir:
    """The run's frames folder: the orchestrator makes and removes it, media workers write into it and model
    workers map from it. Every method but `make` works from any process that knows the folder's path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def make(cls, root: Path | None = None) -> SharedFramesDir:
        """A new frames folder in /dev/shm (else the system's temporary folder), owned by this process."""
        for base in ([root] if root else [SHM_ROOT, Path(os.environ.get("TMPDIR", "/tmp"))]):
            with contextlib.suppress(OSError):
                remove_orphans(base)
                path = base / f"{FRAMES_PREFIX}{owner_tag(base)}-{secrets.token_hex(4)}"
                path.mkdir(mode=0o700)
                return cls(path)
        raise OSError(f"cannot make a frames folder in {root or SHM_ROOT} or the temporary folder")

    def create(self, name: str, shape: tuple[int, ...], dtype: str = "|u1") -> tuple[SharedFrames, np.ndarray]:
        """A segment for an array of `shape`, and a writable view of it to fill (the caller drops the view)."""
        ref = SharedFrames(_checked(name), np.dtype(dtype).str, tuple(int(d) for d in shape))
        path = self.path / ref.name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, max(ref.nbytes, 1))
            try:  # reserved now: a full tmpfs is an error here, not a SIGBUS while the frames are written
                os.posix_fallocate(fd, 0, max(ref.nbytes, 1))
            except OSError as exc:
                path.unlink(missing_ok=True)
                raise SharedFramesFull(f"{self.path}: no room for {ref.nbytes / 2**20:.1f} MiB of frames "
                                       f"({exc.strerror}); give /dev/shm more space (docker: --shm-size)") from None
            mapping = mmap.mmap(fd, max(ref.nbytes, 1))
        finally:
            os.close(fd)
        return ref, np.ndarray(ref.shape, np.dtype(ref.dtype), buffer=mapping)

    def write_stack(self, name: str, frames: list[np.ndarray]) -> SharedFrames:
        """Equal-shaped frames stacked straight into a new segment: one copy each, no stacked array first."""
        ref, view = self.create(name, (len(frames), *frames[0].shape), frames[0].dtype.str)
        for index, frame in enumerate(frames):
            view[index] = frame
        return ref

    def open(self, ref: SharedFrames) -> np.ndarray:
        """A read-only view of the segment `ref` names; it stays valid after the segment is unlinked."""
        path = self.path / _checked(ref.name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise SharedFramesError(f"shared frames {ref.name!r} are gone from {self.path}") from None
        try:
            size = os.fstat(fd).st_size
            if size < ref.nbytes:
                raise SharedFramesError(f"shared frames {ref.name!r} hold {size} bytes, fewer than the "
                                        f"{ref.nbytes} of {ref.dtype} {list(ref.shape)}")
            mapping = mmap.mmap(fd, max(ref.nbytes, 1), prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        return np.ndarray(ref.shape, np.dtype(ref.dtype), buffer=mapping)

    def release(self, ref: SharedFrames) -> None:
        """Unlink a segment (views of it stay valid until dropped); one already gone is fine."""
        self.forget(ref.name)

    def forget(self, name: str) -> None:
        """Unlink the segment named `name`, if there is one: what a worker that died mid-request may have left."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / _checked(name)).unlink()

    def materialized(self, value: Any) -> Any:
        """`value` with every reference to shared frames replaced by a copy of its frames, for a reader that
        cannot map this host's segments (a replica on another node)."""
        if isinstance(value, SharedFrames):
            return np.array(self.open(value))
        if isinstance(value, dict):
            return {key: self.materialized(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.materialized(item) for item in value)
        return value

    def drop(self, value: object) -> None:
        """Release `value` if it is a reference to shared frames (frames held any other way are let be)."""
        if isinstance(value, SharedFrames):
            self.release(value)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def payload_bytes(value: Any) -> int:
    """Bytes of the arrays in a payload (references to shared frames weigh nothing)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(payload_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(payload_bytes(item) for item in value)
    return 0


def _checked(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SharedFramesError(f"{name!r} is not a segment name of a frames folder")
    return name
