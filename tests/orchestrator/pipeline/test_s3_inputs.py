"""Videos read in place from a real S3-compatible server on 127.0.0.1 (moto): listed by prefix, pattern or
key, read through ranged GETs, fingerprinted by ETag. The same videos from local disk are the reference."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3.session
import psutil
import pytest

from orchestrator.pipeline.media.video import VIDEO_SUFFIXES, expand_inputs, open_inputs
from orchestrator.pipeline.output.parts import PIPELINE_FILE
from tests.orchestrator.pipeline.media import write_shots
from tests.orchestrator.pipeline.runs import comparable, outputs, run, start, wait_for, workers_of, write_pipeline
from tests.support.s3_gate import ListingGate
from tests.support.s3_store import SECRET
from workers.media import s3

SHOTS = {"a.mp4": [(30, (200, 40, 40)), (40, (40, 200, 40)), (26, (40, 40, 200))],
         "b.mp4": [(50, (220, 220, 40)), (46, (40, 220, 220))]}
SOURCE_FIELDS = ("video", "video_id", "clip_id", "path", "provenance")
"""What names a row's source or file: differs between a video on disk and the same one in a bucket."""


def store() -> Any:
    return boto3.session.Session().client("s3")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("s3-videos")
    made = {}
    for name, shots in SHOTS.items():
        write_shots(folder / name, shots, size=(96, 64))
        made[name] = folder / name
    return made


def upload(bucket: str, videos: dict[str, Path], prefix: str = "in/") -> None:
    for name, path in videos.items():
        store().upload_file(str(path), bucket, f"{prefix}{name}")


def source_free(rows: list[dict]) -> list[dict]:
    """Rows without the fields naming their source, in clip order."""
    kept = [{k: v for k, v in row.items() if k not in SOURCE_FIELDS} for row in comparable(rows)]
    return sorted(kept, key=lambda row: json.dumps(row, sort_keys=True))


def test_a_seekable_object_reads_the_same_bytes_as_the_file_at_any_position(s3_bucket, videos) -> None:
    """Seeded random seeks and reads through the ranged reader give the file's bytes; reading it through
    once fetches each byte once."""
    path = videos["a.mp4"]
    upload(s3_bucket, {"a.mp4": path})
    data = path.read_bytes()
    reader = s3.ObjectReader(f"s3://{s3_bucket}/in/a.mp4", block_size=4096)
    rng = random.Random(7)
    for _ in range(200):
        where = rng.choice([rng.randrange(len(data)), rng.randrange(len(data) - 100, len(data) + 50)])
        size = rng.randrange(1, 9000)
        reader.seek(where)
        assert reader.read(size) == data[where:where + size]
    whole = s3.ObjectReader(f"s3://{s3_bucket}/in/a.mp4", block_size=4096)
    assert whole.read() == data and whole.fetched == len(data)
    whole.seek(-10, 2)
    assert whole.read() == data[-10:]


def test_readers_sharing_a_block_cache_fetch_each_block_once(s3_bucket, videos, tmp_path) -> None:
    path = videos["b.mp4"]
    upload(s3_bucket, {"b.mp4": path})
    url, data = f"s3://{s3_bucket}/in/b.mp4", path.read_bytes()
    cache = s3.BlockCache(tmp_path / "blocks", limit=len(data) * 2)
    first, second = (s3.ObjectReader(url, block_size=2048, cache=cache) for _ in range(2))
    assert first.read() == data and first.fetched == len(data)
    assert second.read() == data and second.fetched == 0
    small = s3.BlockCache(tmp_path / "small", limit=8192)  # holds four blocks: the rest are evicted
    assert s3.ObjectReader(url, block_size=2048, cache=small).read() == data
    assert sum(f.stat().st_size for f in (tmp_path / "small").iterdir()) <= 8192


def test_an_object_replaced_while_it_is_read_fails_the_read_in_one_line(s3_bucket, videos) -> None:
    url = f"s3://{s3_bucket}/in/a.mp4"
    upload(s3_bucket, {"a.mp4": videos["a.mp4"]})
    reader = s3.ObjectReader(url, block_size=1024)
    reader.read(100)
    store().upload_file(str(videos["b.mp4"]), s3_bucket, "in/a.mp4")
    reader.seek(videos["a.mp4"].stat().st_size // 2)  # past the block read: the next read fetches
    with pytest.raises(s3.ObjectError, match=r"in/a.mp4: the object changed while the run read it \(GetObject\)"):
        reader.read(10)


def test_prefixes_patterns_and_keys_list_the_objects_they_name_page_by_page(s3_bucket) -> None:
    """1,200 keys span two pages of a listing; a prefix takes the video keys under it, a pattern matches
    level by level, a key names itself; a missing bucket is one line naming it."""
    client = store()
    for i in range(1200):
        client.put_object(Bucket=s3_bucket, Key=f"many/{i:04d}.mp4", Body=b"x")
    client.put_object(Bucket=s3_bucket, Key="many/notes.txt", Body=b"x")
    client.put_object(Bucket=s3_bucket, Key="many/deeper/one.MOV", Body=b"x")
    prefix = [url for url, _ in s3.list_objects(f"s3://{s3_bucket}/many/", VIDEO_SUFFIXES)]
    assert len(prefix) == 1201 and f"s3://{s3_bucket}/many/deeper/one.MOV" in prefix
    assert not any(url.endswith(".txt") for url in prefix)
    assert [url for url, _ in s3.list_objects(f"s3://{s3_bucket}/many", VIDEO_SUFFIXES)] == prefix
    pattern = [url for url, _ in s3.list_objects(f"s3://{s3_bucket}/many/00[0-1]?.mp4", VIDEO_SUFFIXES)]
    assert pattern == [f"s3://{s3_bucket}/many/{i:04d}.mp4" for i in range(20)]
    (key, stat), = s3.list_objects(f"s3://{s3_bucket}/many/0007.mp4", VIDEO_SUFFIXES)
    assert key == f"s3://{s3_bucket}/many/0007.mp4" and stat.size == 1 and stat.etag
    with pytest.raises(s3.ObjectError, match=r"the bucket 'no-such-bucket-x' does not exist \(ListObjectsV2\)"):
        list(s3.list_objects("s3://no-such-bucket-x/in/", VIDEO_SUFFIXES))


def test_inputs_in_a_bucket_are_fingerprinted_by_etag_and_an_unreadable_one_says_why(s3_bucket, videos,
                                                                                    tmp_path) -> None:
    upload(s3_bucket, videos)
    store().put_object(Bucket=s3_bucket, Key="in/broken.mp4", Body=b"not a video at all")
    found, missing = expand_inputs([f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/nothing/*.mp4"], tmp_path)
    assert [v.path for v in found] == [f"s3://{s3_bucket}/in/{name}" for name in ("a.mp4", "b.mp4", "broken.mp4")]
    endings = ", ".join(sorted(VIDEO_SUFFIXES))
    pattern = f"s3://{s3_bucket}/nothing/*.mp4"
    assert missing == [(pattern, f"no video object matches {pattern} (looked for keys ending in {endings})")]
    readable, unreadable = open_inputs(found)
    assert [v.path for v in readable] == [f"s3://{s3_bucket}/in/a.mp4", f"s3://{s3_bucket}/in/b.mp4"]
    assert readable[0].meta is not None and readable[0].meta.declared_frames == 96
    assert [(v.path, reason.split(":")[0:2]) for v, reason in unreadable] == [
        (f"s3://{s3_bucket}/in/broken.mp4", ["s3", f"//{s3_bucket}/in/broken.mp4"])]
    assert not readable[0].changed()
    store().upload_file(str(videos["b.mp4"]), s3_bucket, "in/a.mp4")  # a new ETag: another video
    assert readable[0].changed()


def test_a_run_over_a_bucket_equals_the_same_run_over_local_files(s3_bucket, videos, tmp_path, caplog) -> None:
    """The same rows (clip bounds, times, model results) whether the videos are read from disk or in place
    from the bucket, each video fetched from the store twice in all (the run's look at its container, and
    the block the media steps share: three of them decode it); a rerun after one object changed redoes that
    video alone."""
    caplog.set_level(logging.INFO, logger="werkzeug")  # the server's request log
    upload(s3_bucket, videos)
    local_config, local_out = write_pipeline(tmp_path, "local", [videos["a.mp4"].parent])
    bucket_config, bucket_out = write_pipeline(tmp_path, "bucket", [f"s3://{s3_bucket}/in/"])  # type: ignore[list-item]
    for config in (local_config, bucket_config):
        result = run(config)
        assert result.returncode == 0, result.stderr[-3000:]
    local_rows, _ = outputs(local_out)
    bucket_rows, summary = outputs(bucket_out)
    assert source_free(bucket_rows) == source_free(local_rows) and len(bucket_rows) > 2
    assert {row["video"] for row in bucket_rows} == {f"s3://{s3_bucket}/in/{name}" for name in SHOTS}
    assert summary["failures"] == [] and summary["videos_done"] == 2
    assert sorted(p.name for p in (bucket_out / "clips").iterdir()) == sorted(
        Path(row["path"]).name for row in bucket_rows if row["path"])
    gets = {name: sum(f"GET /{s3_bucket}/in/{name} " in record.getMessage() for record in caplog.records)
            for name in SHOTS}
    assert gets == {name: 2 for name in SHOTS}, gets  # each object smaller than one block

    store().upload_file(str(videos["a.mp4"]), s3_bucket, "in/b.mp4")  # b's key now holds a's video
    result = run(bucket_config)
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(bucket_out)
    assert summary["resumed"] == 1 and summary["videos_done"] == 2  # a's kept, b's redone from its new object
    b_rows = [row for row in rows if row["video"].endswith("/b.mp4")]
    a_rows = [row for row in rows if row["video"].endswith("/a.mp4")]
    assert source_free(b_rows) == source_free(a_rows)


def test_media_workers_get_the_stores_credentials_and_model_workers_never(s3_bucket, videos, tmp_path) -> None:
    """While a run reads from the bucket (given with --input), its media workers hold the AWS variables it
    was given (they read the objects) and its model workers hold none of them; no file the run wrote and
    none of its output holds the secret."""
    upload(s3_bucket, videos)
    config, out = write_pipeline(tmp_path, "creds", [tmp_path / "replaced-by-the-command-line.mp4"], delay_s=0.3)
    proc = start(config, "--input", f"s3://{s3_bucket}/in/")
    seen: dict[str, dict[str, str]] = {}
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not {"cut/0", "stats/0"} <= set(seen):
            for worker in workers_of(psutil.Process(proc.pid)):
                with contextlib.suppress(psutil.Error):
                    command = worker.cmdline()
                    label = command[command.index("--name") + 1]
                    seen.setdefault(label, worker.environ())
            time.sleep(0.05)  # polls observable state: the run's worker processes
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    assert {"cut/0", "stats/0"} <= set(seen), sorted(seen)
    assert seen["cut/0"]["AWS_SECRET_ACCESS_KEY"] == SECRET and seen["cut/0"]["AWS_ENDPOINT_URL"]
    for label, environ in seen.items():
        if label.split("/")[0] not in ("decode", "cut", "encode"):
            assert not [name for name in environ if name.startswith("AWS_")], label
    written = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".html", ".log")]
    assert written and not [p for p in written if SECRET in p.read_text(errors="replace")]
    assert SECRET not in stderr


def test_cache_inputs_copies_each_object_once_and_the_run_reads_the_copies(s3_bucket, videos, tmp_path,
                                                                           caplog) -> None:
    """With --cache-inputs, each object is fetched whole once (one GET) and the media steps read the copy;
    a fresh rerun over the same folder fetches nothing (HEADs alone) and gives the same rows as a run that
    reads in place."""
    caplog.set_level(logging.INFO, logger="werkzeug")
    upload(s3_bucket, videos)
    cache = tmp_path / "cache"
    place_config, place_out = write_pipeline(tmp_path, "in-place", [f"s3://{s3_bucket}/in/"])  # type: ignore[list-item]
    result = run(place_config)
    assert result.returncode == 0, result.stderr[-3000:]
    config, out = write_pipeline(tmp_path, "cached", [f"s3://{s3_bucket}/in/"])  # type: ignore[list-item]

    def gets() -> dict[str, int]:
        return {name: sum(f"GET /{s3_bucket}/in/{name} " in r.getMessage() for r in caplog.records) for name in SHOTS}

    before = gets()
    result = run(config, "--cache-inputs", str(cache))
    assert result.returncode == 0, result.stderr[-3000:]
    first = gets()
    assert {name: first[name] - before[name] for name in SHOTS} == {name: 1 for name in SHOTS}
    copies = sorted(p.name for p in cache.iterdir())
    assert len(copies) == 2 and all(name.endswith(".mp4") and not name.startswith(".") for name in copies)
    result = run(config, "--cache-inputs", str(cache), "--fresh")
    assert result.returncode == 0, result.stderr[-3000:]
    assert gets() == first  # the copies were read, the objects only checked
    assert source_free(outputs(out)[0]) == source_free(outputs(place_out)[0])


MANY = 10_000
PAGE = 1_000
"""Keys per listing page: the store's most, and what boto3's paginator asks for."""


def put_many(bucket: str, video: Path, count: int) -> None:
    """`count` keys under many/ holding the video's bytes, put into the server's store directly (this
    process runs it): that many PUTs would take most of a test's time."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    data = video.read_bytes()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for index in range(count):
        backend.put_object(bucket, f"many/v{index:05d}.mp4", data)


def test_a_listing_of_10000_keys_starts_the_first_video_before_the_listing_ends(
        s3_bucket, s3_endpoint, videos, tmp_path, monkeypatch) -> None:
    """10,000 video keys (one small video's bytes each, put into the server's store directly: 10,000 PUTs
    would be most of the test's time) read through a hop that answers the listing's first page and holds
    the next: the run finishes a video while the listing waits, then lists all ten pages as it works, and
    counts every key it found."""
    put_many(s3_bucket, videos["a.mp4"], MANY)
    gate = ListingGate(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", gate.endpoint)
    config, out = write_pipeline(tmp_path, "many", [tmp_path / "replaced-by-the-command-line.mp4"])

    def finished() -> int:
        return len([p for p in (out / ".parts").glob("*.json") if p.name != PIPELINE_FILE])

    proc = start(config, "--input", f"s3://{s3_bucket}/many/")
    try:
        wait_for(lambda: gate.held.is_set() or proc.poll() is not None, "the listing's second page")
        wait_for(lambda: finished() >= 1 or proc.poll() is not None, "the first video to finish")
        assert proc.poll() is None and gate.answered == 1  # page 2 still waits
        gate.release()
        wait_for(lambda: gate.answered == MANY // PAGE or proc.poll() is not None, "the listing's end")
        done = finished()
        wait_for(lambda: finished() > done or proc.poll() is not None, "a video after the listing's end")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.communicate()
        gate.close()
    assert proc.returncode == 130, stderr[-3000:]
    _, summary = outputs(out)
    assert gate.asked == MANY // PAGE and summary["videos"] == MANY
    assert summary["videos_done"] >= 2 and f"of {MANY} videos kept" in stderr


def test_a_listing_cut_off_midway_says_how_far_it_got(s3_bucket, s3_endpoint, videos, tmp_path, monkeypatch) -> None:
    """The store refuses the listing's second page: the videos of the first are found, and the failure says
    the listing stopped after them (not that the whole input was skipped)."""
    put_many(s3_bucket, videos["a.mp4"], PAGE + 10)
    gate = ListingGate(s3_endpoint, refuse=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", gate.endpoint)
    try:  # in a thread of its own: a thread keeps the store client it first made, with the endpoint then set
        with ThreadPoolExecutor(1) as thread:
            found, missing = thread.submit(expand_inputs, [f"s3://{s3_bucket}/many/"], tmp_path).result()
    finally:
        gate.close()
    assert len(found) == PAGE and len(missing) == 1
    pattern, reason = missing[0]
    assert pattern == f"s3://{s3_bucket}/many/" and "access denied (ListObjectsV2, AccessDenied)" in reason
    assert reason.endswith(f"(the listing stopped after {PAGE} videos; the rest were not read: rerun to do them)")
