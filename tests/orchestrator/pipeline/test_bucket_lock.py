"""The lock object of a bucket output folder against a real S3-compatible server (moto) on 127.0.0.1: one
owner at a time, takeover of a gone owner judged by the store's clock and this machine's processes, and a run
that stops writing once it no longer owns the folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from orchestrator.errors import OutputBusy, PipelineError
from orchestrator.pipeline.output import bucket_lock
from orchestrator.pipeline.output.bucket import BucketFolder
from orchestrator.pipeline.output.bucket_lock import LOCK_KEY, BucketLock
from tests.orchestrator.pipeline.test_s3_inputs import store


def _folder(bucket: str, name: str) -> BucketFolder:
    return BucketFolder(f"s3://{bucket}/{name}/")


def _owner(bucket: str, name: str) -> dict:
    return json.loads(store().get_object(Bucket=bucket, Key=f"{name}/{LOCK_KEY}")["Body"].read())


def _until_raises(call, seconds: float = 30) -> Exception:
    limit = time.monotonic() + seconds
    while time.monotonic() < limit:
        try:
            call()
        except PipelineError as exc:
            return exc
        time.sleep(0.05)  # polls what the renewer thread decides
    raise AssertionError("the run kept writing")


def test_one_owner_at_a_time_and_released_frees_it(s3_bucket) -> None:
    first, second = BucketLock(_folder(s3_bucket, "one")), BucketLock(_folder(s3_bucket, "one"))
    first.acquire()
    try:
        with pytest.raises(OutputBusy, match=f"pid {os.getpid()} on {socket.gethostname()}"):
            second.acquire()
    finally:
        first.release()
    second.acquire()
    assert _owner(s3_bucket, "one")["token"] == second._token
    second.release()
    assert not store().list_objects_v2(Bucket=s3_bucket, Prefix="one/").get("Contents")


def test_a_lock_taken_over_stops_the_run_writing_and_stays_the_new_owners(s3_bucket, tmp_path) -> None:
    folder = _folder(s3_bucket, "taken")
    lock = bucket_lock.BucketOutputLock(folder, lease_s=6)
    lock.acquire()
    try:
        folder.local.mkdir(parents=True, exist_ok=True)
        (folder.local / "run.json").write_text("{}")
        folder.publish("run.json")  # owned: writes pass
        other = {"token": "other", "pid": 1, "host": "elsewhere", "lease_s": 600}
        store().put_object(Bucket=s3_bucket, Key=f"taken/{LOCK_KEY}", Body=json.dumps(other).encode())
        error = _until_raises(lambda: folder.publish("run.json"))
    finally:
        lock.release()
    assert "no longer owns the folder" in str(error) and "pid 1 on elsewhere" in str(error)
    assert _owner(s3_bucket, "taken")["token"] == "other", "released a lock another run holds"


def test_renewals_that_stop_stop_the_writes_before_the_lease_runs_out(s3_bucket) -> None:
    """A renewer that no longer renews (its thread gone, its store unreachable): the writes stop once most of
    the lease has passed since the last renewal, before another run could take the folder over."""
    folder = _folder(s3_bucket, "stale")
    lock = BucketLock(folder, lease_s=6)
    lock.acquire()
    try:
        lock._stop.set()
        began = time.monotonic()
        error = _until_raises(lock.check)
        waited = time.monotonic() - began
    finally:
        lock.release()
    assert waited < 6 and "renewing its lock object failed" in str(error)


def test_a_renewal_whose_answer_was_lost_keeps_the_lock(s3_bucket) -> None:
    """The store took a renewal whose answer never came: the next one, refused for the ETag it names, finds
    the lock still holds this run's token and goes on."""
    lock = BucketLock(_folder(s3_bucket, "lost-answer"), lease_s=600)
    lock.acquire()
    try:
        stale = lock._etag
        lock._renew()
        assert lock._etag != stale
        lock._etag = stale  # as if that answer was lost
        lock._renew()
        lock.check()
        assert lock._etag != stale
    finally:
        lock.release()
    assert not store().list_objects_v2(Bucket=s3_bucket, Prefix="lost-answer/").get("Contents")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


@pytest.mark.parametrize("case", ["dead process here", "pid reused here", "lease run out"])
def test_a_gone_owner_is_taken_over_at_once(s3_bucket, case: str) -> None:
    me = psutil.Process()
    owner = {"token": "gone", "pid": os.getpid(), "host": socket.gethostname(), "boot": bucket_lock._boot_id(),
             "pids": bucket_lock._pid_namespace(), "started": me.create_time(), "lease_s": 600}
    if case == "dead process here":
        owner["pid"] = _dead_pid()
    elif case == "pid reused here":
        owner["started"] = me.create_time() - 1000
    else:
        owner = {**owner, "boot": "another machine", "lease_s": 0}
    store().put_object(Bucket=s3_bucket, Key=f"gone/{LOCK_KEY}", Body=json.dumps(owner).encode())
    lock = BucketLock(_folder(s3_bucket, "gone"))
    lock.acquire()
    try:
        assert _owner(s3_bucket, "gone")["token"] == lock._token
    finally:
        lock.release()


@pytest.mark.parametrize("elsewhere", [{"boot": "another machine"}, {"pids": "another container's"}])
def test_a_live_owner_on_another_machine_or_container_is_refused_whatever_its_host_name(s3_bucket,
                                                                                       elsewhere) -> None:
    """The same host name and a pid that does not exist here: another machine's run (another boot), or another
    container's on this machine (another pid namespace), alive until its lease says otherwise."""
    owner = {"token": "there", "pid": _dead_pid(), "host": socket.gethostname(), "boot": bucket_lock._boot_id(),
             "pids": bucket_lock._pid_namespace(), "started": 0.0, "lease_s": 600, **elsewhere}
    store().put_object(Bucket=s3_bucket, Key=f"there/{LOCK_KEY}", Body=json.dumps(owner).encode())
    with pytest.raises(OutputBusy, match="in use by another run"):
        BucketLock(_folder(s3_bucket, "there")).acquire()
