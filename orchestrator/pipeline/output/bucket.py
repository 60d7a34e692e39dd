"""An output folder in a bucket: `output: s3://bucket/run1/` holds what a local output folder holds.

The run keeps a local working copy of the folder's small files (parts, table parts, metadata.jsonl, run.json,
provenance) under the cache, `~/.cache/orchestrator/outputs/<hash of the URL>/`, and writes them there as it
would into a local folder; the bucket gets each once written, in the order that keeps it consistent:

    clips/<video id>_<clip>.mp4   uploaded by the media worker that encoded it (to .tmp/), then copied into
                                  place by the store (no clip byte passes through the orchestrator)
    .parts/<video id>.json        put only once every clip it lists is in place: a part in the bucket still
                                  means "this video is done", so a killed run resumes from the bucket
    clips.parquet/, metadata.jsonl, provenance.jsonl, run.json   put after the parts they are made from

A run starts by replacing its working copy with the bucket's files (the bucket is the truth; the copy is a
cache any machine can rebuild), and by taking the folder's lock object (`orchestrator/pipeline/output/
bucket_lock.py`).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.pipeline.output.parts import PIPELINE_FILE
from orchestrator.settings import cache_home
from workers.media.s3 import S3_SCHEME, ObjectError, client, errors, is_s3, split_url

_log = logging.getLogger(__name__)
PULLERS = 16
"""Small files fetched at once when a run starts from the bucket (a part per finished video)."""
SMALL_FILES = (".parts/", "clips.parquet/", "metadata.jsonl", "provenance.jsonl", "run.json")
"""What the working copy holds of the bucket's folder (the clips stay in the bucket)."""
SET_ASIDE = ("clips/", ".parts/", "clips.parquet/", "metadata.jsonl", "provenance.jsonl", "run.json", "shards/")
"""What `--fresh` moves under `.previous/<time>/` (by copies in the store, then deletes)."""


def local_output_folder(out: str, command: str) -> Path:
    """The output folder a command that reads clips as local files was given; a bucket folder is refused in
    one line saying how to get a local copy."""
    from orchestrator.errors import ConfigError

    if is_s3(out):
        raise ConfigError(f"orchestrator {command} reads a local output folder, and {out} is in a bucket: copy it "
                          f"down first (e.g. aws s3 sync {out} DIR) and give DIR")
    return Path(out)


def working_copy(url: str) -> Path:
    """The local folder a run into `url` writes its small files in (one per output URL on this machine)."""
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return cache_home() / "orchestrator" / "outputs" / digest


class BucketFolder:
    """One output folder's objects: read at the start, then written as the run's writer records results."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/"
        self.bucket, self.prefix = split_url(self.url)
        self.local = working_copy(self.url)
        self._sent: dict[str, tuple[int, int]] = {}
        """Each small file's (mtime, size) as the bucket has it, so only what changed is put again."""
        self.clips: set[str] = set()
        """The clip names (`clips/<name>`) the bucket holds, as listed at the start and kept up to date."""
        self.guard: Callable[[], None] = lambda: None
        """Asked before every write: raises once this run no longer owns the folder (its lock's `check`)."""

    def key(self, relative: str) -> str:
        return self.prefix + relative

    def location(self, relative: str) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key(relative)}"

    def _listed(self, relative: str) -> Iterator[str]:
        """The keys under `relative`, as paths relative to the folder."""
        with errors(self.location(relative), "ListObjectsV2"):
            pages = client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key(relative))
            for page in pages:
                for entry in page.get("Contents", []):
                    yield entry["Key"][len(self.prefix):]

    def pull(self) -> None:
        """Replace the working copy's results with the bucket's small files, and list the clips there."""
        for name in SMALL_FILES:
            target = self.local / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        wanted = [r for name in SMALL_FILES for r in self._listed(name) if r == name or name.endswith("/")]
        with ThreadPoolExecutor(max(1, min(PULLERS, len(wanted))), thread_name_prefix="pull") as pool:
            for _ in pool.map(self._fetch, wanted):  # one GET each, mostly waiting: PULLERS at once
                pass
        self.clips = {r.removeprefix("clips/") for r in self._listed("clips/")}

    def _fetch(self, relative: str) -> None:
        target = self.local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with errors(self.location(relative), "GetObject"):
            client().download_file(self.bucket, self.key(relative), str(target))
        self._sent[relative] = _version(target)

    def publish(self, relative: str) -> None:
        """Put the working copy's file `relative` in the bucket (or delete the object, the file being gone)."""
        path = self.local / relative
        if not path.exists():
            self.delete(relative)
            return
        self.guard()
        version = _version(path)
        with errors(self.location(relative), "PutObject"):
            client().put_object(Bucket=self.bucket, Key=self.key(relative), Body=path.read_bytes())
        self._sent[relative] = version

    def publish_changed(self) -> None:
        """Every small file of the working copy the bucket does not have as it is, parts first (the table and
        metadata are made from them); then the objects of files the working copy no longer has."""
        for name in SMALL_FILES:
            path = self.local / name
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                relative = str(file.relative_to(self.local))
                if file.exists() and self._sent.get(relative) != _version(file):
                    self.publish(relative)
        for relative in [r for r in self._sent if not (self.local / r).exists()]:
            self.delete(relative)

    def delete(self, relative: str) -> None:
        self.guard()
        with errors(self.location(relative), "DeleteObject"):
            client().delete_object(Bucket=self.bucket, Key=self.key(relative))
        self._sent.pop(relative, None)
        if relative.startswith("clips/"):
            self.clips.discard(relative.removeprefix("clips/"))

    def scratch(self) -> str:
        """Where media workers upload the clips they encode, before the writer keeps or drops them."""
        return self.location(".tmp/")

    def clear_scratch(self) -> None:
        """What a killed run left in the scratch prefix: its uploads, and its multipart uploads never completed
        (which the store keeps, and bills, until aborted)."""
        for relative in list(self._listed(".tmp/")):
            self.delete(relative)
        self.guard()
        try:
            with errors(self.scratch(), "ListMultipartUploads"):
                pages = client().get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                  Prefix=self.key(".tmp/"))
                unfinished = [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]
            for key, upload in unfinished:
                with errors(f"{S3_SCHEME}{self.bucket}/{key}", "AbortMultipartUpload"):
                    client().abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
        except ObjectError as exc:  # credentials without these permissions: only a leftover's cost, not results
            _log.warning("left unfinished uploads under %s: %s", self.scratch(), exc)

    def adopt(self, uploaded: str, name: str) -> str:
        """Move an uploaded clip into `clips/<name>` (a copy in the store, then the upload deleted)."""
        self.guard()
        bucket, key = split_url(uploaded)
        with errors(self.location(f"clips/{name}"), "CopyObject"):
            client().copy({"Bucket": bucket, "Key": key}, self.bucket, self.key(f"clips/{name}"))
        with errors(uploaded, "DeleteObject"):
            client().delete_object(Bucket=bucket, Key=key)
        self.clips.add(name)
        return f"clips/{name}"

    def drop(self, uploaded: str) -> None:
        self.guard()
        bucket, key = split_url(uploaded)
        with errors(uploaded, "DeleteObject"):
            client().delete_object(Bucket=bucket, Key=key)

    def has(self, relative: str) -> bool:
        return relative.startswith("clips/") and relative.removeprefix("clips/") in self.clips

    def set_aside(self) -> str | None:
        """Move the earlier results under `.previous/<UTC time>/` in the bucket, so `--fresh` destroys none."""
        present = [r for name in SET_ASIDE for r in self._listed(name) if r == name or name.endswith("/")]
        if not present:
            return None
        self.guard()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        for relative in present:
            with errors(self.location(relative), "CopyObject"):
                client().copy({"Bucket": self.bucket, "Key": self.key(relative)}, self.bucket,
                              self.key(f".previous/{stamp}/{relative}"))
        claim = f".parts/{PIPELINE_FILE}"  # last: while any earlier part is left, the claim refuses a plain rerun
        for relative in sorted(present, key=lambda relative: relative == claim):
            self.delete(relative)
        self.clips.clear()
        return self.location(f".previous/{stamp}/")


def _version(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_size
