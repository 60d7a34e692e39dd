"""A bucket output folder's `--fresh` set-aside against a real S3-compatible server (moto) on 127.0.0.1,
stopped after a seeded number of writes: every earlier object is under `.previous/` before any is deleted,
and while any earlier part is left, so is the claim that refuses a plain rerun."""

from __future__ import annotations

import random

import pytest

from orchestrator.pipeline.output.bucket import BucketFolder
from tests.orchestrator.pipeline.test_s3_inputs import store

EARLIER = [".parts/pipeline.json", *(f".parts/{name}-0000abcd.json" for name in ("a", "q", "videos_z")),
           "clips/a-0000abcd_0000.mp4", "metadata.jsonl", "run.json"]


class Stop(Exception):
    """The set-aside cut off (a kill, a network failure)."""


def _listing(bucket: str, prefix: str) -> set[str]:
    pages = store().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {entry["Key"][len(prefix):] for page in pages for entry in page.get("Contents", [])}


@pytest.mark.parametrize("seed", range(4))
def test_a_set_aside_cut_off_anywhere_loses_nothing_and_keeps_the_claim_last(s3_bucket, seed: int) -> None:
    prefix = f"aside{seed}/"
    for relative in EARLIER:
        store().put_object(Bucket=s3_bucket, Key=prefix + relative, Body=relative.encode())
    folder = BucketFolder(f"s3://{s3_bucket}/{prefix}")
    allowed = random.Random(seed).randrange(1, len(EARLIER) + 2)
    writes = 0

    def guard() -> None:
        nonlocal writes
        writes += 1
        if writes > allowed:
            raise Stop

    folder.guard = guard
    try:
        folder.set_aside()
    except Stop:
        pass
    left = _listing(s3_bucket, prefix)
    aside = {key.split("/", 2)[2] for key in left if key.startswith(".previous/")}
    if writes > 1:  # the copies are all made before the first delete
        assert aside == set(EARLIER)
    parts = {key for key in left if key.startswith(".parts/") and key != ".parts/pipeline.json"}
    assert not parts or ".parts/pipeline.json" in left, "a part outlived the claim"
    for key in (key for key in left if key.startswith(".previous/")):
        relative = key.split("/", 2)[2]
        assert store().get_object(Bucket=s3_bucket, Key=prefix + key)["Body"].read() == relative.encode()


def test_the_bucket_follows_the_working_copy_in_what_it_changes_and_what_it_removes(s3_bucket) -> None:
    """A table part the working copy dropped (an orphan the table removed) leaves the bucket too, so a
    reader of the bucket's table never sees it; a changed file is put again, an unchanged one is not."""
    prefix = "mirror/"
    for relative in ("clips.parquet/a.parquet", "clips.parquet/b.parquet", "run.json"):
        store().put_object(Bucket=s3_bucket, Key=prefix + relative, Body=relative.encode())
    folder = BucketFolder(f"s3://{s3_bucket}/{prefix}")
    folder.pull()
    (folder.local / "clips.parquet" / "b.parquet").unlink()
    (folder.local / "run.json").write_text("{}")
    writes: list[str] = []
    folder.guard = lambda: writes.append("write")
    folder.publish_changed()
    assert _listing(s3_bucket, prefix) == {"clips.parquet/a.parquet", "run.json"}
    assert store().get_object(Bucket=s3_bucket, Key=f"{prefix}run.json")["Body"].read() == b"{}"
    assert len(writes) == 2, "only the changed file and the removed one are written"
