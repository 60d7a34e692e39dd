"""Runs on a Ray cluster smaller than one replica of every stage at one CPU each: they share CPUs and finish
(on the worker nodes, never the head), the media steps read the videos there while the driver opens none, a
config whose stages cannot share ends at once in one line, and losing the only node a stage can run on ends
the run saying what it lacks."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.sample_video import generate_sample
from tests.orchestrator.pipeline.runs import copy_controlled_model, launch, outputs, run, start
from tests.support.ray_nodes import env_workers, ray_node_ids

PIPELINE = """\
inputs: [{video}]
output: {output}
stages:
  - name: shots
    split: models.transnetv2.TransNetV2ShotDetector
    frames: {{size: [48, 27]}}{threads}
  - name: stats
    model: controlled_model.ControlledModel
    params: {{env: ocr, returns: frame_stats, delay_s: {delay_s}}}
    replicas: 2
    frames: {{sampling: per_second, rate: 4, size: [64, 48]}}{threads}{pinned}
  - name: brightness
    model: controlled_model.ControlledModel
    params: {{env: ocr, returns: frame_stats}}
    frames: {{sampling: one_per_clip, size: [32, 24]}}{threads}
"""
MEDIA_STEPS = ("decode", "cut", "encode")
RUN_S = 300
"""Start-up on this machine's two shared cores takes most of it; a run that waits forever exceeds it."""


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "v0.mp4"
    generate_sample(path)
    return path


def _pipeline(folder: Path, video: Path, threads: str = "", pinned: str = "", delay_s: float = 0.0) -> Path:
    copy_controlled_model(folder)
    config = folder / "pipeline.yaml"
    config.write_text(PIPELINE.format(video=video, output=folder / "out", threads=threads, pinned=pinned,
                                      delay_s=delay_s))
    return config


@pytest.mark.skipif(shutil.which("strace") is None, reason="the driver's opens are counted with strace")
def test_stages_share_the_cpus_and_every_replica_runs_on_a_worker_node(small_cluster, video, tmp_path) -> None:
    """Seven replicas (four of model stages, one per media step) want a CPU each of two: they reserve a
    quarter CPU each instead of most of them waiting forever for the others to end; the head has no CPUs, so
    every replica ran on the two worker nodes. The media steps read the video there: the driver process (and
    any process it starts) never opens it, and what it sent and received for its stages is no frame's worth."""
    ray_cluster, nodes = small_cluster
    trace = tmp_path / "driver.trace"
    wrap = ["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=openat", "-o", str(trace)]
    proc = launch(_pipeline(tmp_path, video), tmp_path / "run.log", "--executor", "ray", "--address",
                  ray_cluster.address, wrap=wrap)
    try:
        proc.wait(RUN_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "reserve 0.25 CPU each and share CPUs" in log
    rows, summary = outputs(tmp_path / "out")
    assert summary["failures"] == [] and summary["videos_done"] == 1 and rows
    workers = {node.node_id[:8] for node in nodes.values()}
    stages = ("shots", "stats", "brightness", *MEDIA_STEPS)
    ran_on = {stage: ray_node_ids(summary["stages"][stage]["nodes"]) for stage in stages}
    assert all(ids and ids <= workers for ids in ran_on.values()), ran_on
    assert ray_cluster.head_node.node_id[:8] not in set().union(*ran_on.values())
    assert sum(summary["stages"]["stats"]["nodes"].values()) == summary["stages"]["stats"]["replicas"] == 2
    opened = re.findall(r'openat\([^,]+, "([^"]+)"', trace.read_text())
    assert any(path.endswith("pipeline.yaml") for path in opened)  # the trace saw the driver's opens
    assert str(video) not in opened and not any(path.endswith(".mp4") and "/out/" not in path for path in opened)
    decoded = sum(row["frames"] for row in rows if row["frames"]) * 48 * 27 * 3  # what the split alone was given
    moved = sum(stats["bytes_moved"] for stats in summary["stages"].values())
    assert 0 < moved < 0.01 * decoded, (moved, decoded)


def test_stages_whose_threads_do_not_fit_end_at_once_in_one_line(small_cluster, video, tmp_path) -> None:
    """With `threads` set, a replica reserves them: three stages of one thread cannot share two CPUs."""
    ray_cluster, _ = small_cluster
    config = _pipeline(tmp_path, video, threads="\n    threads: 1")
    result = run(config, "--executor", "ray", "--address", ray_cluster.address)
    assert result.returncode == 2, result.stderr[-3000:]
    line = ("the Ray cluster has 2 CPUs; one replica of every stage needs 4 (stages shots=1, stats=1, "
            "brightness=1, decode=0.333, cut=0.333, encode=0.333): add nodes, or lower the stages' `threads`")
    assert line in result.stderr and "Traceback" not in result.stderr
    assert len([text for text in result.stderr.splitlines() if text.startswith("error:")]) == 1


def test_losing_the_only_node_with_a_stages_resource_ends_the_run_naming_it(small_cluster, video, tmp_path) -> None:
    """`stats` needs `lonely`, which one node has: once that node is gone, its restarted replica could never
    be placed, so the run ends (instead of waiting for it forever) with the stage and what it lacks."""
    ray_cluster, _ = small_cluster
    lonely = ray_cluster.add_node(num_cpus=1, resources={"lonely": 2})
    ray_cluster.wait_for_nodes()
    config = _pipeline(tmp_path, video, pinned="\n    resources: {lonely: 1}", delay_s=0.3)
    proc = start(config, "--executor", "ray", "--address", ray_cluster.address)
    try:
        _wait_for_stats_work_below(lonely.all_processes["raylet"][0].process.pid, proc, tmp_path / "out")
        ray_cluster.remove_node(lonely)
        removed = time.monotonic()
        _, stderr = proc.communicate(timeout=RUN_S)
        ended_after_s = time.monotonic() - removed
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 1, stderr[-3000:]  # it stopped once running: not a config error
    assert ("error: stage 'stats': no alive node of the Ray cluster can hold a replica any more: it needs "
            "lonely=1 (the most any node has is 0); add such a node and rerun") in stderr
    assert "Traceback" not in stderr
    assert ended_after_s < 120, f"the run took {ended_after_s:.0f} s to end after its node left"


def _wait_for_stats_work_below(raylet: int, proc: Any, out: Path) -> None:
    """Until a `stats` env worker runs under the node's raylet and clips are being cut (work under way), or
    the run ended."""
    limit = time.monotonic() + RUN_S
    while time.monotonic() < limit and proc.poll() is None:
        if (out / ".tmp").is_dir() and any((out / ".tmp").iterdir()) and any(
                _below(worker, raylet) and "stats/" in " ".join(worker.cmdline()) for worker in env_workers()):
            return
        time.sleep(0.05)  # polls an observable state: the worker process and the clips exist
    raise AssertionError(f"no stats worker worked on the lonely node (run exit {proc.poll()})")


def _below(process: Any, ancestor: int) -> bool:
    try:
        return any(parent.pid == ancestor for parent in process.parents())
    except Exception:
        return False
