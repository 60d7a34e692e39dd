"""A worker's OS process and what else it holds: the process leads its own group, and its exit is seen
without reaping it.

    spawn ──▶ running ──exit──▶ zombie (exit status readable, pid and group id still ours) ──reap──▶ gone
                                                                        SIGKILL to the group ┘ then wait

Whatever a model starts (a server, a pool of helpers) joins the worker's group, and must not outlive it.
A group can only be signalled safely while its leader is unreaped: once reaped, the pid, and so the group
id, may be given to an unrelated process. So nothing here reaps on the way: `poll` reads the exit status
with waitid(WNOWAIT) on a pidfd, and only `reap` collects the process, after SIGKILL to its whole group.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import zmq

from orchestrator.supervisor.ring import WorkerRing

_KILLED = (os.CLD_KILLED, os.CLD_DUMPED)


class WorkerProcess:
    """One spawned worker process and its pidfd (readable once it has exited). Safe to use from two threads
    (a call waiting on the worker while another stops it): signalling and reaping exclude each other, so a
    group is never signalled after its leader was reaped."""

    def __init__(self, argv: Sequence[str], environ: Mapping[str, str]) -> None:
        self._popen = subprocess.Popen(list(argv), env=dict(environ), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.pid = self._popen.pid
        self.pidfd: int | None = os.pidfd_open(self.pid)
        self._lock = threading.RLock()

    @property
    def stdout(self) -> IO[bytes]:
        return self._popen.stdout  # type: ignore[return-value]

    @property
    def stderr(self) -> IO[bytes]:
        return self._popen.stderr  # type: ignore[return-value]

    @property
    def reaped(self) -> bool:
        return self._popen.returncode is not None

    def poll(self) -> int | None:
        """The exit status (negative: the signal that killed it), or None while it runs; never reaps."""
        with self._lock:
            if self._popen.returncode is not None or self.pidfd is None:
                return self._popen.returncode
            info = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is None or info.si_pid == 0:
            return None
        return -info.si_status if info.si_code in _KILLED else info.si_status

    def wait_exit(self, timeout: float | None) -> int | None:
        """Wait up to `timeout` seconds (None: for ever) for the process to exit, without reaping it."""
        with self._lock:
            if self.pidfd is None or self.poll() is not None:
                return self.poll()
            watched = os.dup(self.pidfd)  # stays valid if another thread reaps meanwhile and closes its own
        try:
            poller = select.poll()
            poller.register(watched, select.POLLIN)
            poller.poll(None if timeout is None else int(timeout * 1000) + 1)
        finally:
            os.close(watched)
        return self.poll()

    def send_signal(self, sig: int) -> None:
        """Signal the worker alone (through its pidfd: never another process that got its pid)."""
        with self._lock:
            if self.pidfd is not None and not self.reaped:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self.pidfd, sig)

    def kill_group(self) -> None:
        """SIGKILL the worker and everything in its group; safe while the worker is unreaped."""
        with self._lock:
            if not self.reaped:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)

    def reap(self) -> int:
        """Kill what is left of the group, collect the worker's exit status and close the pidfd."""
        with self._lock:
            self.kill_group()
            returncode = self._popen.wait()
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None
            return returncode


class WorkerResources:
    """Everything a worker holds, released by one idempotent call (also run by weakref.finalize, so a handle
    that fails halfway through its launch still frees what it took)."""

    def __init__(self) -> None:
        self.sockets: list[zmq.Socket] = []
        self.process: WorkerProcess | None = None
        self.ring = WorkerRing()
        self.endpoints: list[Path] = []

    def spawn(self, argv: Sequence[str], environ: Mapping[str, str]) -> WorkerProcess:
        self.process = WorkerProcess(argv, environ)
        return self.process

    def release(self) -> None:
        if self.process is not None:
            self.process.reap()  # the worker's whole process group goes with it
        for sock in self.sockets:
            sock.close(linger=0)
        self.ring.close()
        for path in self.endpoints:
            path.unlink(missing_ok=True)
