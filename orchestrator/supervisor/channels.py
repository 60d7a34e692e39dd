"""A worker's two sockets, as the parent uses them.

    data     requests and replies: a send never blocks on a peer that died or stopped reading
    control  a raw shutdown request, and heartbeats the worker's control thread answers while its model runs

Neither waits behind the other: a stop is prompt, and a busy worker can be told from a frozen one.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable
from typing import Any

import zmq

from orchestrator.supervisor.ring import WorkerRing
from workers.protocol import SHUTDOWN, Decoder, Encoder, Kind, Message, ProtocolError

"""Raw bytes, not a message: the worker stops on anything on its control socket but a heartbeat."""


class SendFailed(Exception):
    """The worker exited, or its socket took nothing for the whole send timeout."""


class DataChannel:
    def __init__(self, socket: zmq.Socket, ring: WorkerRing, inline_threshold: int, shm_threshold: int) -> None:
        self.socket = socket
        self._ring = ring
        self._encoder = Encoder(inline_threshold, ring.writer, shm_threshold)
        self._decoder = Decoder()
        self.bytes_sent = self.bytes_received = 0
        """Bytes of the messages sent and received on the socket (the ring's are the ring writer's)."""

    def send(self, message: Message, pidfd: int, exited: Callable[[], bool], timeout_s: float) -> list[int]:
        """Send `message`, waking if the process behind `pidfd` exits; returns the ring slots it holds until its
        reply. Raises ProtocolError if it cannot be encoded, SendFailed (its slots freed) if it was not sent."""
        frames, slots = self._encoder.encode(message)
        self._ring.taken(slots)
        try:
            self._send_frames(frames, pidfd, exited, time.monotonic() + timeout_s)
        except BaseException:
            self._ring.release(slots)
            raise
        self.bytes_sent += sum(memoryview(frame).nbytes for frame in frames)
        return slots

    def _send_frames(self, frames: list[Any], pidfd: int, exited: Callable[[], bool], limit: float) -> None:
        poller: zmq.Poller | None = None
        while True:
            try:
                self.socket.send_multipart(frames, zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                pass
            if poller is None:
                poller = zmq.Poller()
                poller.register(self.socket, zmq.POLLOUT)
                poller.register(pidfd, select.POLLIN)
            remaining = limit - time.monotonic()
            if exited() or remaining <= 0:
                raise SendFailed
            poller.poll(int(remaining * 1000) + 1)

    def receive(self) -> list[zmq.Frame] | None:
        """A message already queued on the socket, without a poll system call (the fast path)."""
        try:
            return self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None

    def decode(self, frames: list[zmq.Frame]) -> Message:
        self.bytes_received += sum(frame.buffer.nbytes for frame in frames)
        return self._decoder.decode(frames)

    @property
    def bytes_moved(self) -> int:
        ring = self._ring.writer
        return self.bytes_sent + self.bytes_received + (ring.bytes_written if ring is not None else 0)

    def wait(self, seconds: float) -> bool:
        """Whether a message arrives within `seconds` (False too once the socket is closed)."""
        with contextlib.suppress(zmq.ZMQError):
            return bool(self.socket.poll(int(seconds * 1000)))
        return False


class ControlChannel:
    def __init__(self, socket: zmq.Socket) -> None:
        self.socket = socket
        self._encoder, self._decoder = Encoder(), Decoder()

    def ask_to_stop(self) -> None:
        self._send([SHUTDOWN])

    def heartbeat(self, request_id: int) -> None:
        self._send(self._encoder.encode(Message(Kind.HEARTBEAT, request_id))[0])

    def _send(self, frames: list[Any]) -> None:
        """Never blocking: a message the socket does not take goes unanswered, and the caller's deadline tells."""
        with contextlib.suppress(zmq.ZMQError):
            self.socket.send_multipart(frames, zmq.NOBLOCK)

    def answers(self) -> list[int]:
        """Request ids of the heartbeats answered since the last call; anything unreadable is dropped."""
        found = []
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return found
            with contextlib.suppress(ProtocolError):
                message = self._decoder.decode(frames)
                if message.kind is Kind.HEARTBEAT:
                    found.append(message.request_id)
