"""The Ray executor against the local one on the quickstart workload, and frames between two nodes through
our path against a plain Ray actor call, measured in one run on a local multi-node Ray cluster.

    --videos generated videos ─▶ execute(quickstart.yaml)                 local executor
                              ─▶ execute(quickstart.yaml, RayCluster)     head + one worker node on 127.0.0.1
        clips/s after start-up (every replica set up) ─▶ RATIO ray / local clips/s

    producer actor (node A) returns a batch of frames as a call's second return value (as a media replica
    does), the driver holding its object ref without fetching it, then hands it to node B:
        ours:  {"frames": RayFrames(ref)} ─▶ the ref as WorkerHost.call's argument (Ray fetches it onto B)
               ─▶ env worker (ipc + shared memory) ─▶ model ─▶ small reply
        plain: ReceiverActor.take(ref) (Ray resolves the argument on B) ─▶ small reply
        ─▶ RATIO ours / plain Ray frames/s

    driver CPU seconds per clip of the Ray run (this process: it plans, forwards refs and writes metadata;
    the media steps decode and encode on the nodes), beside the local run's orchestrator for scale.

    the same videos in a local S3 server (moto_server), the nodes reaching it directly and this process (the
    driver) through a counting hop (tests/support/s3_link.py): bytes the driver read per clip (the listing,
    each object's check, response headers), over the video bytes per clip ─▶ RATIO driver bytes read per clip

On one machine the cluster's nodes share its cores and memory, so the quickstart ratio shows the executor's
own overhead (actor calls, object store copies), not a cluster's speed-up.

    .venv/bin/python bench/ray.py [--videos 4] [--minutes 0.5] [--batches 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# This file is named ray.py: with its folder first on sys.path, `import ray` would import it again.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != BENCH]
sys.path.insert(0, str(BENCH.parent))  # the checkout, for the tests' counting hop

import numpy as np  # noqa: E402

from orchestrator.declarations import ModelDeclarations  # noqa: E402
from orchestrator.on_ray.frames import RayFrames, unreffed  # noqa: E402
from orchestrator.on_ray.host import HostRequest, WorkerHost  # noqa: E402
from orchestrator.on_ray.replicas import RayCluster  # noqa: E402
from orchestrator.supervisor.handle import ModelRef  # noqa: E402
from orchestrator.supervisor.policy import WorkerPolicy  # noqa: E402
from tests.support.s3_link import S3Link  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_pipeline", BENCH / "pipeline.py")
assert _spec is not None and _spec.loader is not None
bench_pipeline = importlib.util.module_from_spec(_spec)
sys.modules["bench_pipeline"] = bench_pipeline  # its dataclasses look their module up by name
_spec.loader.exec_module(bench_pipeline)
PipelineRun = bench_pipeline.PipelineRun
make_source, progress = bench_pipeline.make_source, bench_pipeline.progress
run_pipeline, scratch_dir = bench_pipeline.run_pipeline, bench_pipeline.scratch_dir
s3_server, aws_environ = bench_pipeline.s3_server, bench_pipeline.aws_environ
BUCKET = "bench"
FRAMES_PER_BATCH = 32
FRAME_SHAPE = (240, 320, 3)
IN_FLIGHT = 2
CALL_TIMEOUT_S = 60.0
"""A call this late means something is stuck (an actor never placed): fail rather than wait."""
WARMUP = 5


class Producer:
    """Runs on node A: hands out the same batch of frames as its calls' second return value, which the
    caller (the driver) owns."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.batch = rng.integers(0, 255, (FRAMES_PER_BATCH, *FRAME_SHAPE), dtype=np.uint8)

    def produce(self) -> tuple[dict[str, Any], np.ndarray]:
        return {"frames": list(self.batch.shape)}, self.batch


class Receiver:
    """A plain Ray actor: the array arrives as its argument, a few bytes go back."""

    def take(self, frames: np.ndarray) -> dict[str, Any]:
        return {"shape": list(frames.shape), "sum0": int(frames.flat[0])}


def frames_per_s(ray: Any, producer: Any, target: Any, ours: bool, batches: int) -> float:
    """Frames/s from the producer on node A to `target` on node B, `IN_FLIGHT` batches at a time, driven by
    this process as the pipeline drives its replicas (it never fetches the frames)."""

    def send() -> Any:
        _, frames = producer.produce.options(num_returns=2).remote()
        if ours:  # what RayWorker.submit sends a clip stage's replica: a slot in its payload, the ref beside
            refs: list[Any] = []
            payload = unreffed({"frames": RayFrames(frames, "|u1", (FRAMES_PER_BATCH, *FRAME_SHAPE))}, refs)
            return target.call.remote(ray.put(payload), False, 0, *refs)
        return target.take.remote(frames)

    for count in (WARMUP, batches):
        pending: deque[Any] = deque()
        started = time.perf_counter()
        for _ in range(count):
            if len(pending) >= IN_FLIGHT:
                ray.get(pending.popleft(), timeout=CALL_TIMEOUT_S)
            pending.append(send())
        ray.get(list(pending), timeout=CALL_TIMEOUT_S)
    return batches * FRAMES_PER_BATCH / (time.perf_counter() - started)


def between_nodes(ray: Any, batches: int) -> tuple[float, float]:
    """Frames/s from an actor on node A to node B: through a WorkerHost's env worker, and to a plain actor."""
    request = HostRequest("bench/0", "ocr", ModelRef("echo_models.ShapeOf", {"conda_env_name": "ocr"}),
                          ModelDeclarations("ShapeOf", "ocr", num_gpus=0), (BENCH,), policy=WorkerPolicy())
    host = ray.remote(WorkerHost).options(num_cpus=0, resources={"node_b": 0.1}).remote(request)
    receiver = ray.remote(Receiver).options(num_cpus=0, resources={"node_b": 0.1}).remote()
    producer = ray.remote(Producer).options(num_cpus=0, resources={"node_a": 0.1}).remote()
    try:
        ray.get(host.start.remote(), timeout=600)
        ours = frames_per_s(ray, producer, host, True, batches)
        plain = frames_per_s(ray, producer, receiver, False, batches)
    finally:
        ray.get(host.stop.remote(), timeout=CALL_TIMEOUT_S)
        for actor in (host, receiver, producer):
            ray.kill(actor)
    return ours, plain


def clips_per_s(run: PipelineRun) -> float:
    return run.clips / run.run_s


@dataclass(frozen=True)
class DriverReads:
    """What the driver read from the store during a Ray run over inputs in it."""

    run: PipelineRun
    replied: int
    """Bytes the store replied to the driver."""
    video_bytes: int


def report(local: PipelineRun, on_ray: PipelineRun, ours: float, plain: float, load: tuple[float, float],
           reads: DriverReads) -> None:
    mb = FRAMES_PER_BATCH * int(np.prod(FRAME_SHAPE)) / 1e6
    print(f"quickstart over {local.source.describe()} ({local.clips} clips)")
    for name, run in (("local executor", local), ("ray executor", on_ray)):
        print(f"  {name:<16} start-up {run.startup_s:6.1f} s   {clips_per_s(run):6.2f} clips/s after it")
    print(f"frames between two nodes, {FRAMES_PER_BATCH} x {FRAME_SHAPE} uint8 per call ({mb:.1f} MB), "
          f"{IN_FLIGHT} in flight")
    print(f"  ours (driver-owned ref -> host -> env worker)  {ours:8.0f} frames/s")
    print(f"  plain Ray actor call                            {plain:8.0f} frames/s")
    print(f"load average before / after: {load[0]:.2f} / {load[1]:.2f} on {os.cpu_count()} cores")
    driver, orchestrator = on_ray.usage.parent_cpu_s, local.usage.parent_cpu_s
    streaming = on_ray.usage.cpu_since(on_ray.ready_at)[0]
    print(f"driver CPU: {driver:.1f} s for {on_ray.clips} clips on Ray ({streaming:.1f} s of it after start-up: "
          f"forwarding refs, writing rows); the local orchestrator {orchestrator:.1f} s for {local.clips}")
    print(f"RATIO ray / local clips/s: {clips_per_s(on_ray) / clips_per_s(local):.2f}")
    print(f"RATIO driver CPU s per clip (Ray): {driver / max(on_ray.clips, 1):.3f} "
          f"(local orchestrator: {orchestrator / max(local.clips, 1):.3f})")
    print(f"RATIO ours / plain Ray frames/s between nodes: {ours / plain:.2f}")
    clips = max(reads.run.clips, 1)
    print(f"inputs in S3 on Ray: the driver read {reads.replied / 1e3:.1f} kB from the store for "
          f"{reads.run.clips} clips of {reads.video_bytes / 1e6:.2f} MB of videos")
    print(f"RATIO driver bytes read per clip / video bytes per clip (Ray, inputs in S3): "
          f"{reads.replied / reads.video_bytes:.4f} ({reads.replied / clips:.0f} bytes per clip)")


def run(videos: int, minutes: float, batches: int) -> None:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every node on 127.0.0.1
    import boto3.session
    import ray
    from ray.cluster_utils import Cluster

    load_before = os.getloadavg()[0]
    with scratch_dir() as scratch, s3_server() as (host, port):
        progress(f"generating {videos} videos of {minutes:g} min")
        source = make_source(scratch / "videos", minutes, videos)
        progress("local executor")
        local = run_pipeline(source, scratch / "out-local")
        store = f"http://{host}:{port}"
        os.environ.update(aws_environ(store))  # the nodes started below reach the store directly
        client = boto3.session.Session().client("s3")
        client.create_bucket(Bucket=BUCKET)
        for path in source.paths:
            client.upload_file(str(path), BUCKET, f"in/{path.name}")
        progress("starting a two-node Ray cluster on 127.0.0.1")
        cores = os.cpu_count() or 2
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cores, "resources": {"node_a": 1},
                                                                "include_dashboard": False})
        try:
            cluster.add_node(num_cpus=cores, resources={"node_b": 1})
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
            progress("ray executor")
            on_ray = run_pipeline(source, scratch / "out-ray", cluster=RayCluster(cluster.address))
            progress("ray executor, inputs in S3 (the driver through a counting hop)")
            link = S3Link(store)
            os.environ["AWS_ENDPOINT_URL"] = link.endpoint
            urls = tuple(f"s3://{BUCKET}/in/{path.name}" for path in source.paths)
            from_s3 = run_pipeline(dataclasses.replace(source, paths=urls), scratch / "out-ray-s3",
                                   cluster=RayCluster(cluster.address))
            link.close()
            reads = DriverReads(from_s3, link.replied, sum(path.stat().st_size for path in source.paths))
            progress("frames between two nodes")
            ours, plain = between_nodes(ray, batches)
        finally:
            ray.shutdown()
            cluster.shutdown()
    report(local, on_ray, ours, plain, (load_before, os.getloadavg()[0]), reads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4, help="input videos (default 4)")
    parser.add_argument("--minutes", type=float, default=0.5, help="length of each (default 0.5)")
    parser.add_argument("--batches", type=int, default=40, help="calls per transport measurement (default 40)")
    args = parser.parse_args()
    if args.videos < 1 or args.minutes * 60 < 3 or args.batches < 1:
        parser.error("--videos and --batches must be at least 1, --minutes at least 0.05")
    run(args.videos, args.minutes, args.batches)


if __name__ == "__main__":
    main()
