"""How fast frames and small requests reach a worker, against peers measured in the same run.

    parent ──submit(1080p frame)──▶ worker in env (ShapeOf) ──{"shape", "sum0"}──▶ parent   (4 in flight)

Peers for frames: the same worker without shared memory, multiprocessing.Pipe, a bare shared-memory ring
signalled over a Pipe (the one-copy limit), an in-process memcpy and, when installed, a Ray actor.
Then small round trips (synchronous and pipelined) and worker start time against a bare interpreter.

    .venv/bin/python bench/transport.py [--frames 300] [--env ocr]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.envs import Env, EnvRegistry
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.policy import WorkerPolicy
from orchestrator.supervisor.runtime_dir import make_runtime_dir
from workers.shm_ring import ShmRingReader, ShmRingWriter

BENCH_DIR = Path(__file__).resolve().parent
FRAME_SHAPE = (1080, 1920, 3)
FRAME_IN_FLIGHT = 4
SMALL_IN_FLIGHT = 64
SMALL_SYNC, SMALL_PIPELINED = 2_000, 20_000
STARTS = 5
WARMUP = 10
PING = {"x": 1}
SLOT = struct.Struct("<I")
REPLY = struct.Struct("<QB")  # frame bytes and first byte: as small as ShapeOf's reply
SPAWN = mp.get_context("spawn")


def per_second(step: Callable[[int], object], n: int) -> float:
    """Calls of `step` per second over `n` calls, after a warm-up."""
    for count in (WARMUP, n):
        started = time.perf_counter()
        for i in range(count):
            step(i)
    return n / (time.perf_counter() - started)


def streamed(send: Callable[[int], object], recv: Callable[[], object], n: int, depth: int) -> float:
    """Items per second through `send`/`recv` with at most `depth` outstanding, after a warm-up."""
    for count in (WARMUP, n):
        started = time.perf_counter()
        sent = done = 0
        while done < count:
            while sent < count and sent - done < depth:
                send(sent)
                sent += 1
            recv()
            done += 1
    return n / (time.perf_counter() - started)


# --- our transport ------------------------------------------------------------------------------
@contextlib.contextmanager
def worker(env: Env, runtime_dir: Path, model: str, policy: WorkerPolicy, start: bool = True
           ) -> Iterator[WorkerHandle]:
    spec = WorkerSpec(label=f"bench-{model.lower()}", env=env, user_code_dirs=(BENCH_DIR,),
                      model=ModelRef(f"echo_models.{model}", {"conda_env_name": env.name}),
                      setup_options={"input": {"form": "dict"}})  # the payload as sent: a bare array here
    with WorkerHandle(spec, runtime_dir, policy) as handle:
        if start:
            handle.start()
        yield handle


def ours_frames(env: Env, runtime_dir: Path, frames: list[np.ndarray], n: int, shm: bool) -> float:
    policy = WorkerPolicy(max_in_flight=FRAME_IN_FLIGHT, use_shared_memory=shm)
    with worker(env, runtime_dir, "ShapeOf", policy) as handle:
        return streamed(lambda i: handle.submit(frames[i % len(frames)]), lambda: handle.receive(30),
                        n, handle.policy.max_in_flight)


def small_round_trips(env: Env, runtime_dir: Path) -> tuple[float, float]:
    with worker(env, runtime_dir, "Pong", WorkerPolicy(max_in_flight=SMALL_IN_FLIGHT)) as handle:
        sync = per_second(lambda _: handle.call(PING, 30), SMALL_SYNC)
        pipelined = streamed(lambda _: handle.submit(PING), lambda: handle.receive(30), SMALL_PIPELINED,
                             handle.policy.max_in_flight)
    return sync, pipelined


def start_times(env: Env, runtime_dir: Path) -> tuple[float, float]:
    """Median seconds of `WorkerHandle.start()` (spawn to READY plus a trivial SETUP) and of a bare import."""
    starts, bare = [], []
    for _ in range(STARTS):
        with worker(env, runtime_dir, "Pong", WorkerPolicy(), start=False) as handle:
            started = time.perf_counter()
            handle.start()
            starts.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run([str(env.python), "-c", "import zmq, msgpack, numpy"], check=True)
        bare.append(time.perf_counter() - started)
    return statistics.median(starts), statistics.median(bare)


# --- peers --------------------------------------------------------------------------------------
@contextlib.contextmanager
def child(target: Callable[..., None], *args: Any) -> Iterator[Connection]:
    """A spawned child process serving `target(conn, *args)`; stopped and reaped on exit, Ctrl-C included."""
    parent_end, child_end = SPAWN.Pipe()
    process = SPAWN.Process(target=target, args=(child_end, *args), daemon=True)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child inherits it: Ctrl-C is the parent's
    try:
        process.start()
        signal.signal(signal.SIGINT, previous)
        child_end.close()
        yield parent_end
    finally:
        signal.signal(signal.SIGINT, previous)
        parent_end.close()
        if process.pid is not None:
            process.join(2)
            process.kill()
            process.join()


def pipe_child(conn: Connection) -> None:
    with contextlib.suppress(EOFError, ConnectionError):  # the parent closed the pipe
        while True:
            data = conn.recv_bytes()
            conn.send_bytes(REPLY.pack(len(data), data[0]))


def ring_child(conn: Connection, name: str, slots: int, slot_bytes: int, strides: tuple[int, ...]) -> None:
    ring = ShmRingReader.attach(name, slots, slot_bytes)
    with contextlib.suppress(EOFError, ConnectionError):
        while True:
            (slot,) = SLOT.unpack(conn.recv_bytes())
            frame = ring.view(slot, np.dtype(np.uint8), FRAME_SHAPE, strides, slot_bytes)
            conn.send_bytes(REPLY.pack(frame.nbytes, frame.flat[0]))


def pipe_frames(frames: list[np.ndarray], n: int) -> float:
    flat = [frame.reshape(-1) for frame in frames]  # send_bytes slices its buffer, so give it one dimension
    with child(pipe_child) as conn:
        return streamed(lambda i: conn.send_bytes(flat[i % len(flat)]), conn.recv_bytes, n, FRAME_IN_FLIGHT)


def bare_ring_frames(frames: list[np.ndarray], n: int) -> float:
    ring = ShmRingWriter(FRAME_IN_FLIGHT, frames[0].nbytes)
    pending: deque[int] = deque()

    def send(i: int) -> None:
        slot = ring.try_write(frames[i % len(frames)])
        if slot is None:
            raise RuntimeError("bare ring: no free slot, though it has one per frame in flight")
        pending.append(slot)
        conn.send_bytes(SLOT.pack(slot))

    def recv() -> None:
        conn.recv_bytes()
        ring.release([pending.popleft()])

    try:
        with child(ring_child, ring.name, ring.n_slots, ring.slot_bytes, frames[0].strides) as conn:
            return streamed(send, recv, n, FRAME_IN_FLIGHT)
    finally:
        ring.close()


def memcpy_frames(frames: list[np.ndarray], n: int) -> float:
    target = np.empty_like(frames[0])
    return per_second(lambda i: np.copyto(target, frames[i % len(frames)]), n)


def ray_frames(frames: list[np.ndarray], n: int) -> float | None:
    here = Path(__file__).resolve().parent  # holds bench/ray.py, which `import ray` must not find
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    try:
        import ray
    except ImportError:
        return None
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        shape_of = ray.remote(_RayShapeOf).remote()
        pending: deque[Any] = deque()
        return streamed(lambda i: pending.append(shape_of.run.remote(frames[i % len(frames)])),
                        lambda: ray.get(pending.popleft()), n, FRAME_IN_FLIGHT)
    finally:
        ray.shutdown()


class _RayShapeOf:
    def run(self, frame: np.ndarray) -> dict[str, Any]:
        return {"shape": list(frame.shape), "sum0": int(frame.flat[0])}


# --- report -------------------------------------------------------------------------------------
OURS_SHM = f"ours, shared memory (max_in_flight={FRAME_IN_FLIGHT})"
OURS_ZMQ = "ours, zmq frames (use_shared_memory=False)"
PIPE = "multiprocessing.Pipe (spawn), send_bytes"
BARE_RING = "bare shm ring + Pipe signal (one-copy limit)"
MEMCPY = "in-process memcpy (np.copyto)"
RAY = "ray actor"


def table(title: str, units: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    for name, *cells in [(title, *units), *rows]:
        print(f"{name:<52}" + "".join(f"{cell:>10}" for cell in cells))
    print()


def report(rates: dict[str, Any], frame_bytes: int, small: tuple[float, float], start: tuple[float, float]) -> None:
    if rates[RAY] is None:
        print("ray: not installed, skipped")
    table("1920x1080x3 uint8, parent -> child -> small reply", ("frames/s", "GB/s"), [
        (name, f"{rate:.1f}", f"{rate * frame_bytes / 1e9:.2f}") if rate is not None else (name, "skipped")
        for name, rate in rates.items()])
    table('small round trips, payload {"x": 1}', ("per s",), [
        ("synchronous (call)", f"{small[0]:.0f}"), (f"pipelined (max_in_flight={SMALL_IN_FLIGHT})", f"{small[1]:.0f}")])
    table(f"worker start, median of {STARTS}", ("s",), [
        ("WorkerHandle.start() (spawn -> READY -> SETUP)", f"{start[0]:.3f}"),
        ('bare `<env python> -c "import zmq, msgpack, numpy"`', f"{start[1]:.3f}")])
    print(f"RATIO frames/s ours(shm) / bare shm ring = {rates[OURS_SHM] / rates[BARE_RING]:.2f}   (target >= 0.8)")
    print(f"RATIO frames/s ours(shm) / multiprocessing.Pipe = {rates[OURS_SHM] / rates[PIPE]:.2f}   (target >= 5)")
    print(f"RATIO small round trips/s pipelined = {small[1]:.0f}   (target >= 10000)")
    print(f"RATIO worker start - bare import = {start[0] - start[1]:.2f}s   (target <= 0.3s)")


def run(env_name: str, n: int) -> None:
    env = EnvRegistry().ensure(env_name)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, FRAME_SHAPE, dtype=np.uint8) for _ in range(FRAME_IN_FLIGHT)]
    runtime_dir = make_runtime_dir("orch-bench-")
    try:
        rates = {
            OURS_SHM: ours_frames(env, runtime_dir, frames, n, shm=True),
            OURS_ZMQ: ours_frames(env, runtime_dir, frames, n, shm=False),
            PIPE: pipe_frames(frames, n),
            BARE_RING: bare_ring_frames(frames, n),
            MEMCPY: memcpy_frames(frames, n),
            RAY: ray_frames(frames, n),
        }
        small = small_round_trips(env, runtime_dir)
        start = start_times(env, runtime_dir)
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)
    report(rates, frames[0].nbytes, small, start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames per transport (default 300)")
    parser.add_argument("--env", default="ocr", help="env the workers run in (default ocr)")
    args = parser.parse_args()
    try:
        run(args.env, args.frames)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
