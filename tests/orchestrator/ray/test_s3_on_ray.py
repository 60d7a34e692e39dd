"""Inputs and outputs in S3 on a Ray cluster: each media replica reads its videos from the store on its own
node, with that node's credentials, and uploads the clips it encodes from there; the driver lists the inputs,
reads no video's bytes and writes only the small files (parts, table, metadata)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3.session
import pytest

from tests.orchestrator.pipeline.media import write_shots
from tests.orchestrator.pipeline.runs import run, write_pipeline
from tests.support.ray_nodes import ray_node_ids
from tests.support.s3_link import S3Link
from tests.support.s3_store import SECRET, aws_environ

ray = pytest.importorskip("ray", reason="the Ray executor's tests need the ray extra: bash scripts/setup.sh")
from ray.cluster_utils import Cluster  # noqa: E402

SHOTS = [(40, (200, 40, 40)), (40, (40, 200, 40)), (40, (40, 40, 200))]


@pytest.fixture(scope="module")
def s3_cluster(s3_endpoint: str) -> Iterator[tuple[Cluster, dict[str, Any]]]:
    """Two one-CPU worker nodes under a head without CPUs, started with the store's settings in their
    environment, so their replicas reach it directly."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in aws_environ(s3_endpoint).items():
            patch.setenv(name, value)
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        try:
            nodes = {name: cluster.add_node(num_cpus=1) for name in ("one", "two")}
            cluster.wait_for_nodes()
        except BaseException:
            cluster.shutdown()
            raise
    try:
        yield cluster, nodes
    finally:
        cluster.shutdown()


def _bucket_of_videos(s3_endpoint: str, folder: Path, size: tuple[int, int]) -> tuple[Any, str, int]:
    """A new bucket holding two videos under in/: its client, its name and the videos' bytes."""
    bucket = f"bucket-{uuid.uuid4().hex[:12]}"
    client = boto3.session.Session().client("s3", **{"endpoint_url": s3_endpoint, "region_name": "us-east-1",
                                                      "aws_access_key_id": "test", "aws_secret_access_key": SECRET})
    client.create_bucket(Bucket=bucket)
    sizes = 0
    for name in ("a.mp4", "b.mp4"):
        write_shots(folder / name, SHOTS, size=size)
        client.upload_file(str(folder / name), bucket, f"in/{name}")
        sizes += (folder / name).stat().st_size
    return client, bucket, sizes


def test_the_driver_reads_no_video_and_uploads_no_clip_while_the_nodes_use_the_bucket(s3_cluster, s3_endpoint,
                                                                                     tmp_path: Path) -> None:
    """s3 -> s3 on Ray, the driver reaching the store through a hop that counts both ways: the listing, the
    checks of each object and the small files pass it, no video and no clip does (each clip is uploaded by
    the node that encoded it, then moved into place by a server-side copy); the media steps ran on the worker
    nodes, and the bucket holds every clip its rows list and the parts resume reads."""
    ray_cluster, nodes = s3_cluster
    client, bucket, sizes = _bucket_of_videos(s3_endpoint, tmp_path, size=(640, 480))  # clips outweigh small files
    link = S3Link(s3_endpoint)
    try:
        config, _ = write_pipeline(tmp_path, "ray-s3", [f"s3://{bucket}/in/"])  # type: ignore[list-item]
        result = run(config, "--executor", "ray", "--address", ray_cluster.address,
                     "--output", f"s3://{bucket}/out/", environ=aws_environ(link.endpoint))
    finally:
        link.close()
    assert result.returncode == 0, result.stderr[-3000:]
    objects = {entry["Key"].removeprefix("out/"): entry["Size"]
               for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="out/")
               for entry in page.get("Contents", [])}
    rows = [json.loads(line) for line in
            client.get_object(Bucket=bucket, Key="out/metadata.jsonl")["Body"].read().decode().splitlines()]
    summary = json.loads(client.get_object(Bucket=bucket, Key="out/run.json")["Body"].read())
    assert summary["failures"] == [] and summary["videos_done"] == 2 and rows
    workers = {node.node_id[:8] for node in nodes.values()}
    for step in ("decode", "cut", "encode"):
        assert ray_node_ids(summary["stages"][step]["nodes"]) <= workers, step
    clips = sorted(key for key in objects if key.startswith("clips/"))
    assert clips and clips == sorted(row["path"] for row in rows if row["path"])
    assert {f".parts/{row['video_id']}.json" for row in rows} <= set(objects)
    assert not [key for key in objects if key.startswith(".tmp/") or key == ".lock"]
    # the store's answers to its listing, checks and writes: under half of one video's bytes (two videos)
    assert 0 < link.replied < 0.25 * sizes, (link.replied, sizes)
    clip_bytes = sum(objects[key] for key in clips)
    assert 0 < link.sent < 0.25 * clip_bytes, (link.sent, clip_bytes)  # it wrote small files, uploaded no clip
