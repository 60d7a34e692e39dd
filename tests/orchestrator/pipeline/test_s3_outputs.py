"""An output folder in a bucket on a real S3-compatible server on 127.0.0.1 (moto): what it holds after a
run, after a run killed at seeded moments and rerun, and with a lock object another run holds. The same
run into a local folder is the reference."""

from __future__ import annotations

import io
import json
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from orchestrator.pipeline.output.bucket import working_copy
from tests.orchestrator.pipeline.media import write_shots
from tests.orchestrator.pipeline.runs import outputs, run, start, write_pipeline
from tests.orchestrator.pipeline.test_s3_inputs import source_free, store, upload
from tests.support.s3_store import SECRET

SHOTS = {f"{name}.mp4": [(30 + 4 * i, (200, 40, 40)), (40, (40, 200, 40)), (26 + 2 * i, (40, 40, 200))]
         for i, name in enumerate("abcd")}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("s3-out-videos")
    for name, shots in SHOTS.items():
        write_shots(folder / name, shots, size=(96, 64))
    return {name: folder / name for name in SHOTS}


@pytest.fixture(scope="module")
def reference(videos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    """The rows and the folder of the same run into a local folder, over the same videos on disk."""
    tmp = tmp_path_factory.mktemp("s3-out-reference")
    config, out = write_pipeline(tmp, "local", [next(iter(videos.values())).parent])
    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    return outputs(out)[0], out


def keys(bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix`, by key relative to it."""
    found = {}
    for page in store().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            found[entry["Key"][len(prefix):]] = entry["Key"]
    return found


def read(bucket: str, key: str) -> bytes:
    return store().get_object(Bucket=bucket, Key=key)["Body"].read()


def bucket_outputs(bucket: str, prefix: str) -> tuple[list[dict], dict[str, Any]]:
    rows = [json.loads(line) for line in read(bucket, f"{prefix}metadata.jsonl").decode().splitlines()]
    return rows, json.loads(read(bucket, f"{prefix}run.json"))


def frames_of(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """The same frame as x264 encodes it: its rate control depends on the thread budget a run's encode got,
    so two runs' frames differ by a level or two on average (another clip's frame differs by a hundred)."""
    return float(np.abs(a.astype(np.int16) - b).mean()) < 2.0


def check_holds_the_reference(bucket: str, prefix: str, reference: tuple[list[dict], Path]) -> list[dict]:
    """The bucket's folder holds the reference run's rows, exactly its kept clips (decoded frame for frame
    equal), its parts and table, and no scratch upload or lock object."""
    ref_rows, ref_out = reference
    rows, summary = bucket_outputs(bucket, prefix)
    assert source_free(rows) == source_free(ref_rows) and summary["failures"] == []
    present = keys(bucket, prefix)
    clips = sorted(k for k in present if k.startswith("clips/"))
    assert clips == sorted(row["path"] for row in rows if row["path"]) and clips
    by_clip = {(Path(row["video"]).name, row["clip_index"]): row["path"] for row in rows if row["path"]}
    for row in ref_rows:
        if row["path"]:
            ours = by_clip[Path(row["video"]).name, row["clip_index"]]
            mine, theirs = frames_of(read(bucket, present[ours])), frames_of((ref_out / row["path"]).read_bytes())
            assert len(mine) == len(theirs) and all(same_picture(a, b) for a, b in zip(mine, theirs, strict=True))
    assert {f".parts/{row['video_id']}.json" for row in rows} <= set(present)
    assert {f"clips.parquet/{row['video_id']}.parquet" for row in rows} <= set(present)
    assert not [k for k in present if k.startswith(".tmp/") or k == ".lock"]
    return rows


def test_a_run_into_a_bucket_holds_what_a_local_folder_holds(s3_bucket, videos, reference, tmp_path) -> None:
    """s3 → s3: the rows of the local run, its clips decoded frame for frame the same, the parts resume reads
    (a rerun resumes every video from the bucket, even with the working copy gone); no secret in run.json."""
    upload(s3_bucket, videos)
    output = f"s3://{s3_bucket}/run1/"
    config, _ = write_pipeline(tmp_path, "bucket", [f"s3://{s3_bucket}/in/"])  # type: ignore[list-item]
    result = run(config, "--output", output)
    assert result.returncode == 0, result.stderr[-3000:]
    assert output in result.stdout
    check_holds_the_reference(s3_bucket, "run1/", reference)
    assert SECRET not in read(s3_bucket, "run1/run.json").decode()

    copy = working_copy(output)
    for part in (copy / ".parts").glob("*.json"):
        part.unlink()  # the bucket is the truth: a machine without the working copy resumes the same
    again = run(config, "--output", output)
    assert again.returncode == 0, again.stderr[-3000:]
    _, summary = bucket_outputs(s3_bucket, "run1/")
    assert summary["resumed"] == len(SHOTS) and summary["videos_done"] == len(SHOTS)
    check_holds_the_reference(s3_bucket, "run1/", reference)


@pytest.mark.parametrize("seed", [3, 11])
def test_a_run_killed_at_a_seeded_moment_resumes_from_the_bucket(s3_bucket, videos, reference, tmp_path,
                                                                 seed: int) -> None:
    """SIGKILL once the folder holds a seeded number of objects (clips, parts, scratch uploads); the rerun
    takes over the dead run's lock, resumes, and leaves exactly the clips its rows list."""
    upload(s3_bucket, videos)
    output = f"s3://{s3_bucket}/killed/"
    config, _ = write_pipeline(tmp_path, "bucket", [f"s3://{s3_bucket}/in/"])  # type: ignore[list-item]
    wanted = random.Random(seed).randrange(2, 12)
    process = start(config, "--output", output)
    deadline = time.monotonic() + 300
    while process.poll() is None and len(keys(s3_bucket, "killed/")) < wanted:
        assert time.monotonic() < deadline, "the run wrote too few objects"
        time.sleep(0.02)  # a poll's pace, not a synchronisation: the listing decides
    process.kill()
    process.communicate(timeout=60)
    result = run(config, "--output", output)
    assert result.returncode == 0, result.stderr[-3000:]
    check_holds_the_reference(s3_bucket, "killed/", reference)


def test_a_folder_another_run_holds_is_refused_and_left_as_it_was(s3_bucket, videos, tmp_path) -> None:
    """A live lock object (this test's own process, unexpired) refuses the run in one line, and the folder
    is unchanged; once its lease has run out (by the store's clock), a run takes the folder over."""
    upload(s3_bucket, videos)
    config, _ = write_pipeline(tmp_path, "bucket", [f"s3://{s3_bucket}/in/"])  # type: ignore[list-item]
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "expires": time.time() + 600}
    store().put_object(Bucket=s3_bucket, Key="held/.lock", Body=json.dumps(owner).encode())
    result = run(config, "--output", f"s3://{s3_bucket}/held/")
    assert result.returncode == 2  # as for a local folder in use
    assert "in use by another run" in result.stderr and f"pid {os.getpid()}" in result.stderr
    assert "Traceback" not in result.stderr and list(keys(s3_bucket, "held/")) == [".lock"]

    store().put_object(Bucket=s3_bucket, Key="held/.lock", Body=json.dumps({**owner, "lease_s": 0}).encode())
    result = run(config, "--output", f"s3://{s3_bucket}/held/")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ".lock" not in keys(s3_bucket, "held/") and "metadata.jsonl" in keys(s3_bucket, "held/")


def test_fresh_sets_the_buckets_results_aside(s3_bucket, videos, tmp_path) -> None:
    upload(s3_bucket, {"a.mp4": videos["a.mp4"]})
    config, _ = write_pipeline(tmp_path, "bucket", [f"s3://{s3_bucket}/in/"])  # type: ignore[list-item]
    assert run(config, "--output", f"s3://{s3_bucket}/f/").returncode == 0
    first = {k for k in keys(s3_bucket, "f/")}
    # a clip's multipart upload a killed run never completed: the store keeps it (and bills it) until aborted
    store().create_multipart_upload(Bucket=s3_bucket, Key="f/.tmp/killed-upload.mp4")
    result = run(config, "--output", f"s3://{s3_bucket}/f/", "--fresh")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not store().list_multipart_uploads(Bucket=s3_bucket, Prefix="f/").get("Uploads")
    after = keys(s3_bucket, "f/")
    aside = {k.split("/", 2)[2] for k in after if k.startswith(".previous/")}
    assert first <= aside and {k for k in after if not k.startswith(".previous/")} == first


def test_a_missing_bucket_is_one_line_and_writes_nothing(videos, s3_bucket, tmp_path) -> None:
    upload(s3_bucket, {"a.mp4": videos["a.mp4"]})
    config, _ = write_pipeline(tmp_path, "bucket", [f"s3://{s3_bucket}/in/"])  # type: ignore[list-item]
    result = run(config, "--output", "s3://no-such-bucket-here/run/")
    assert result.returncode == 2  # nothing ran: a setup error, as for an unwritable local folder
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no-such-bucket-here" in lines[0] and "does not exist" in lines[0], result.stderr
