"""The Ray executor on a real multi-node cluster: the same outputs as the local executor, placement by
fractional GPUs and custom resources, an env on another Python than the driver's, and a node lost mid-run."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from models.model_utils import WEIGHTS_DIR_VAR
from orchestrator.declarations import ModelDeclarations
from orchestrator.on_ray.frames import RayFrames
from orchestrator.on_ray.host import HostRequest
from orchestrator.on_ray.placement import StagePlacement
from orchestrator.on_ray.ray_worker import RayWorker
from orchestrator.pipeline.media.steps import MEDIA_DECLARATIONS, MEDIA_MODEL
from orchestrator.sample_video import generate_sample
from orchestrator.supervisor.events import Answer, Died, Hello, Phase, SetUp, SetupFailed
from orchestrator.supervisor.handle import ModelRef
from orchestrator.supervisor.policy import WorkerPolicy
from tests.orchestrator.pipeline.runs import FIXTURES, ROOT, comparable, copy_controlled_model, outputs, run, start
from tests.support.envs import ensure_env
from tests.support.ray_nodes import env_workers, ray_node_ids
from workers.media.model import OWN_ENV, frame_outputs

ray = pytest.importorskip("ray", reason="the Ray executor's tests need the ray extra: bash scripts/setup.sh")

PIPELINE = """\
inputs: [{inputs}]
output: {output}
stages:
  - {{name: shots, split: models.transnetv2.TransNetV2ShotDetector, frames: {{size: [48, 27]}}}}
  - name: stats
    model: controlled_model.ControlledModel
    params: {{env: ocr, returns: frame_stats, delay_s: {delay_s}}}
    replicas: 2
    batch_size: 2
    resources: {{spare: 1}}
    frames: {{sampling: per_second, rate: 4, size: [64, 48]}}
  - name: stats312
    model: controlled_model.ControlledModel
    params: {{env: content_filter, returns: frame_stats}}
    resources: {{head: 1}}
    frames: {{sampling: one_per_clip, size: [32, 24]}}
  - {{name: keep, filter: {{min_duration_s: 1.6}}}}
"""
RUN_S = 300


def write_pipeline(folder: Path, videos: list[Path], delay_s: float = 0.0) -> tuple[Path, Path]:
    copy_controlled_model(folder)
    config, out = folder / "pipeline.yaml", folder / "out"
    config.write_text(PIPELINE.format(inputs=", ".join(map(str, videos)), output=out, delay_s=delay_s))
    return config, out


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("videos")
    generate_sample(folder / "v0.mp4")
    shutil.copy(folder / "v0.mp4", folder / "v1.mp4")
    return [folder / "v0.mp4", folder / "v1.mp4"]


@pytest.fixture(scope="module")
def local_rows(videos, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    config, out = write_pipeline(tmp_path_factory.mktemp("local"), videos)
    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    return comparable(outputs(out)[0])


def test_outputs_equal_the_local_executors(cluster, videos, local_rows, tmp_path: Path) -> None:
    config, out = write_pipeline(tmp_path, videos)
    result = run(config, "--executor", "ray", "--address", cluster[0].address)
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(out)
    assert comparable(rows) == local_rows
    assert summary["failures"] == [] and summary["videos_done"] == len(videos)
    kept = sorted(r["path"] for r in rows if r["path"])
    assert kept and sorted(f"clips/{p.name}" for p in (out / "clips").iterdir()) == kept
    ray_cluster, nodes = cluster
    spare = {nodes[name].node_id[:8] for name in ("spare_a", "spare_b")}
    assert ray_node_ids(summary["stages"]["stats"]["nodes"]) <= spare, "stats ran off the nodes with `spare`"
    assert ray_node_ids(summary["stages"]["stats312"]["nodes"]) == {ray_cluster.head_node.node_id[:8]}


def test_losing_a_node_mid_run_loses_and_duplicates_nothing(cluster, videos, local_rows, tmp_path: Path) -> None:
    """Both `stats` replicas need `spare`, which only spare_a and spare_b have: removing the node that hosts
    one while it works kills that replica; its items run again on the other node."""
    ray_cluster, nodes = cluster
    config, out = write_pipeline(tmp_path, videos, delay_s=0.3)
    proc = start(config, "--executor", "ray", "--address", ray_cluster.address)
    try:
        victim = _node_hosting_stats_worker_once_rows_flow(nodes, out)
        ray_cluster.remove_node(nodes[victim])
        _, stderr = proc.communicate(timeout=RUN_S)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    rows, summary = outputs(out)
    assert comparable(rows) == local_rows
    assert summary["failures"] == []
    assert summary["stages"]["stats"]["worker_restarts"] >= 1
    kept = sorted(r["path"] for r in rows if r["path"])
    assert sorted(f"clips/{p.name}" for p in (out / "clips").iterdir()) == kept


def _node_hosting_stats_worker_once_rows_flow(nodes: dict[str, Any], out: Path) -> str:
    """The spare node whose raylet has a `stats` env worker, once clips are being cut (work under way)."""
    limit = time.monotonic() + RUN_S
    while time.monotonic() < limit:
        if _clips_cut(out):
            for name in ("spare_a", "spare_b"):
                raylet = nodes[name].all_processes["raylet"][0].process.pid
                if any(_below(worker, raylet) and "stats/" in " ".join(worker.cmdline()) for worker in env_workers()):
                    return name
        time.sleep(0.05)  # waits for an observable state: a stats worker up and work under way
    raise AssertionError("no stats worker ran on a spare node while the run worked")


def _clips_cut(out: Path) -> bool:
    return (out / ".tmp").is_dir() and any((out / ".tmp").iterdir())


def _below(process: Any, ancestor: int) -> bool:
    try:
        return any(parent.pid == ancestor for parent in process.parents())
    except Exception:
        return False


def _host(stage: str, env: str, num_gpus: float, resources: dict[str, float]) -> RayWorker:
    declared = ModelDeclarations("ControlledModel", env, num_gpus=num_gpus)
    model = ModelRef("controlled_model.ControlledModel", {"env": env, "returns": "environ", "num_gpus": num_gpus})
    request = HostRequest(stage, env, model, declared, (FIXTURES,), policy=WorkerPolicy(request_timeout_s=60))
    options = {"num_cpus": 0, "num_gpus": num_gpus, "resources": resources}
    return RayWorker(request, StagePlacement(stage, options), max_in_flight=1)


def _answers(workers: list[RayWorker]) -> list[dict[str, Any]]:
    """Start every replica, send each one request, and return each one's answer (its worker's view)."""
    for worker in workers:
        worker.launch()
    answers: dict[int, dict[str, Any]] = {}
    limit = time.monotonic() + RUN_S
    while len(answers) < len(workers) and time.monotonic() < limit:
        for index, worker in enumerate(workers):
            for event in worker.events():
                assert not isinstance(event, Died), event.error
                if isinstance(event, Hello):
                    worker.setup()
                elif isinstance(event, SetUp):
                    worker.submit({"x": 1})
                elif isinstance(event, Answer):
                    answers[index] = {**event.payload, "node": worker.info["node"], "gpus": worker.info["gpu_ids"]}
        if len(answers) < len(workers):
            _wait_any(workers)
    assert len(answers) == len(workers), "not every replica answered"
    return [answers[i] for i in range(len(workers))]


def _wait_any(workers: list[RayWorker]) -> None:
    import select

    poller = select.poll()
    for worker in workers:
        for fd in worker.wait_targets:
            poller.register(fd, select.POLLIN)
    poller.poll(1000)


def test_fractional_gpus_share_a_gpu_and_whole_ones_are_exclusive(cluster) -> None:
    quarters = [_host(f"quarter/{i}", "ocr", 0.25, {"gpu_one": 1}) for i in range(4)]
    wholes = [_host(f"whole/{i}", "ocr", 1.0, {"gpu_two": 1}) for i in range(2)]
    try:
        shared, exclusive = _answers(quarters), _answers(wholes)
    finally:
        for worker in quarters + wholes:
            worker.release()
    assert {a["node"] for a in shared} == {shared[0]["node"]}, "the 0.25 replicas were not all on gpu_one"
    assert [(a["cuda_visible_devices"], a["memory_fraction"]) for a in shared] == [("0", "0.25")] * 4
    assert len({a["node"] for a in exclusive}) == 1 and exclusive[0]["node"] != shared[0]["node"]
    assert sorted(a["cuda_visible_devices"] for a in exclusive) == ["0", "1"]
    assert all(a["memory_fraction"] == "" for a in exclusive)
    assert all(worker.phase is Phase.DEAD for worker in quarters + wholes)


def test_an_env_on_another_python_than_the_drivers_runs(cluster) -> None:
    worker = _host("py312/0", "content_filter", 0.0, {"head": 1})
    try:
        (answer,) = _answers([worker])
    finally:
        worker.release()
    driver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert answer["python"] == "3.12" != driver


RADIO = FIXTURES / "tutorial_style"
RADIO_WEIGHTS = "test-org/radio-like"


@pytest.fixture(scope="module")
def radio_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial-style model's tiny checkpoint in a folder laid out like a weights mirror."""
    folder = tmp_path_factory.mktemp("mirror")
    python = ensure_env("video_splitting").python
    made = subprocess.run([str(python), str(RADIO / "make_radio_like_weights.py"), str(folder)],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    return folder


def _radio_host(node_cache: Path, weights_from: Path | None) -> RayWorker:
    """A replica of the tutorial-style model whose node has an empty weights cache of its own."""
    declared = ModelDeclarations("RadioLike", "video_splitting", (RADIO_WEIGHTS,),
                                 {RADIO_WEIGHTS: ("model.safetensors",)}, num_gpus=0)
    request = HostRequest("radio/0", "video_splitting", ModelRef("radio_like.RadioLike", {}), declared, (RADIO,),
                          weights_from=None if weights_from is None else str(weights_from))
    options = {"num_cpus": 0, "num_gpus": 0, "resources": {"head": 1},
               "runtime_env": {"env_vars": {WEIGHTS_DIR_VAR: str(node_cache)}}}
    return RayWorker(request, StagePlacement("radio", options), max_in_flight=1)


def _first_start_event(worker: RayWorker) -> Any:
    worker.launch()
    limit = time.monotonic() + RUN_S
    while time.monotonic() < limit:
        for event in worker.events():
            if isinstance(event, Hello):
                worker.setup()
            elif isinstance(event, (SetUp, SetupFailed, Died)):
                return event
        _wait_any([worker])
    raise AssertionError("the replica neither started nor failed")


def test_a_node_lacking_weights_fetches_them_from_the_mirror_or_says_how(cluster, radio_mirror, tmp_path) -> None:
    worker = _radio_host(tmp_path / "bare-node", None)
    try:
        event = _first_start_event(worker)
    finally:
        worker.release()
    assert isinstance(event, SetupFailed), event
    message = str(event.error)
    assert message.startswith("node ") and RADIO_WEIGHTS in message and "--weights-from" in message

    worker = _radio_host(tmp_path / "fetching-node", radio_mirror)
    try:
        assert isinstance(_first_start_event(worker), SetUp)
    finally:
        worker.release()
    assert (tmp_path / "fetching-node" / RADIO_WEIGHTS / "model.safetensors").is_file()


def test_an_unreachable_head_is_one_line_at_once(tmp_path: Path) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    result = run(ROOT / "examples" / "quickstart.yaml", "-o", str(tmp_path), "--executor", "ray", "--address", address)
    assert result.returncode == 2
    assert f"cannot reach the Ray cluster's head at {address}" in result.stderr and "Traceback" not in result.stderr


def _answer(worker: RayWorker, payload: Any) -> Any:
    """Start the replica, send it `payload` once it is set up, and return its answer's payload."""
    worker.launch()
    limit = time.monotonic() + RUN_S
    while time.monotonic() < limit:
        for event in worker.events():
            assert not isinstance(event, (Died, SetupFailed)), event
            if isinstance(event, Hello):
                worker.setup()
            elif isinstance(event, SetUp):
                worker.submit(payload)
            elif isinstance(event, Answer):
                return event.payload
        _wait_any([worker])
    raise AssertionError(f"{worker.label} gave no answer")


def test_media_frames_are_object_refs_the_driver_owns_and_outlive_the_media_actor(cluster, videos) -> None:
    """A media replica on one node decodes a split window: its frames come back as an object ref (the
    driver fetched no pixel of them) held in that node's store; the media actor is then ended, and a model
    replica on another node still gets those frames whole."""
    _, nodes = cluster
    media_request = HostRequest("decode/0", OWN_ENV, ModelRef(MEDIA_MODEL, {"frames_dir": "/nonexistent"}),
                                MEDIA_DECLARATIONS, policy=WorkerPolicy(request_timeout_s=60), media=True)
    media = RayWorker(media_request, StagePlacement("decode", {"num_cpus": 0, "num_gpus": 0, "resources":
                                                              {"gpu_one": 1}, "max_concurrency": 1}),
                      max_in_flight=1, frame_outputs=frame_outputs)
    window = {"op": "split", "path": str(videos[0]), "size": [320, 240], "core_start": 0, "core": 8, "step": 8,
              "context": 2, "name": "0.split.0"}  # 2.8 MB: above Ray's inline size, so it stays in a store
    try:
        answer = _answer(media, window)
    finally:
        media.release()  # the actor and its node's frames folder are gone before the model reads the frames
    frames = answer["frames"]
    assert isinstance(frames, RayFrames) and frames.shape == (12, 240, 320, 3) and answer["real"] == 8
    assert frames.node == nodes["gpu_one"].node_id and media.bytes_moved == 0
    held = ray.experimental.get_object_locations([frames.ref])[frames.ref]
    assert held["node_ids"] == [nodes["gpu_one"].node_id] and held["object_size"] >= frames.nbytes
    model = _host("stats", "ocr", 0, {"gpu_two": 1})
    model.request = dataclasses.replace(model.request, model=ModelRef("controlled_model.ControlledModel",
                                                                      {"env": "ocr", "returns": "frame_stats"}))
    try:
        stats = _answer(model, {"frames": frames})
    finally:
        model.release()
    pixels = ray.get(frames.ref, timeout=60)  # the test (not the pipeline) looks at them, to compare
    assert stats["n"] == 12 and stats["mean"] == pytest.approx(float(pixels.mean()))
    assert model.info["node_id"] == nodes["gpu_two"].node_id and model.bytes_moved == 0
