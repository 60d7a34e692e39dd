"""One run at a time per bucket output folder: a lock object with an owner and an expiry.

    <folder>/.lock   {"pid", "host", "expires"} of the run that owns the folder, created only if absent
                     (a conditional PUT, If-None-Match), renewed while the run lives (If-Match its own ETag)

A second run is refused with who holds the folder. A lock whose run is gone (expired, or its process dead
on this same machine) is taken over, by a delete conditional on the ETag seen, so two runs taking over the
same dead lock cannot both win. A store without conditional writes cannot hold such a lock: use one that
has them (AWS S3, MinIO, R2 do).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import psutil

from orchestrator.errors import ConfigError, OutputBusy
from orchestrator.pipeline.output.bucket import BucketFolder
from workers.media.s3 import ObjectError, client, errors

LOCK_KEY = ".lock"
LEASE_S = 120.0
"""How long a lock object holds without renewal: a run killed on another machine is taken over after this."""
RENEW_S = LEASE_S / 4


class BucketLock:
    """The exclusive claim on one bucket output folder, with the interface of OutputLock."""

    def __init__(self, folder: BucketFolder) -> None:
        self.folder = folder
        self._etag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._etag is not None

    def acquire(self) -> None:
        """Take the folder, or raise OutputBusy naming the run that holds it (ConfigError when the bucket
        cannot be reached or written)."""
        if self.held:
            return
        try:
            for _ in range(2):
                if self._create():
                    break
                owner, etag = self._read()
                if owner is not None and not _gone(owner):
                    raise OutputBusy(f"output {self.folder.url} is in use by another run (pid {owner.get('pid')} "
                                     f"on {owner.get('host')}); wait for it to end, or choose another --output")
                if etag is not None:
                    self._delete(etag)  # another run taking it over at once makes this fail: then it is theirs
            else:
                raise OutputBusy(f"output {self.folder.url} was just taken by another run; choose another --output")
        except ObjectError as exc:
            raise ConfigError(f"{exc}") from None
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="output-lock", daemon=True)
        self._renewer.start()

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        etag, self._etag = self._etag, None
        try:
            if etag is not None:
                self._delete(etag)
        except ObjectError:
            pass  # it expires on its own

    def _body(self) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "expires": time.time() + LEASE_S}).encode()

    def _create(self) -> bool:
        try:
            with errors(self.folder.location(LOCK_KEY), "PutObject"):
                answer = client().put_object(Bucket=self.folder.bucket, Key=self.folder.key(LOCK_KEY),
                                             Body=self._body(), IfNoneMatch="*")
        except ObjectError as exc:
            if exc.code == "changed":  # 412: there is one
                return False
            raise
        self._etag = answer["ETag"]
        return True

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            with errors(self.folder.location(LOCK_KEY), "GetObject"):
                answer = client().get_object(Bucket=self.folder.bucket, Key=self.folder.key(LOCK_KEY))
                body = answer["Body"].read()
        except ObjectError as exc:
            if exc.code == "not_found":
                return None, None
            raise
        try:
            owner = json.loads(body)
        except ValueError:
            owner = {}
        return (owner if isinstance(owner, dict) else {}), answer["ETag"]

    def _delete(self, etag: str) -> None:
        try:
            with errors(self.folder.location(LOCK_KEY), "DeleteObject"):
                client().delete_object(Bucket=self.folder.bucket, Key=self.folder.key(LOCK_KEY), IfMatch=etag)
        except ObjectError as exc:
            if exc.code not in ("changed", "not_found"):
                raise

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                with errors(self.folder.location(LOCK_KEY), "PutObject"):
                    answer = client().put_object(Bucket=self.folder.bucket, Key=self.folder.key(LOCK_KEY),
                                                 Body=self._body(), IfMatch=self._etag)
                self._etag = answer["ETag"]
            except ObjectError:
                continue  # a store briefly unreachable: the lease outlasts several tries


def _gone(owner: dict[str, Any]) -> bool:
    """Whether the run that wrote this lock has ended: its lease ran out, or its process on this machine died."""
    expires = owner.get("expires")
    if not isinstance(expires, (int, float)) or expires < time.time():
        return True
    pid = owner.get("pid")
    return owner.get("host") == socket.gethostname() and isinstance(pid, int) and not psutil.pid_exists(pid)


class BucketOutputLock:
    """A bucket output's two claims: its local working copy's (one run per machine writes it), then the
    bucket's lock object (one run anywhere)."""

    def __init__(self, folder: BucketFolder) -> None:
        from orchestrator.pipeline.output.lock import OutputLock

        self.local = OutputLock(folder.local)
        self.remote = BucketLock(folder)

    @property
    def held(self) -> bool:
        return self.remote.held

    def acquire(self) -> None:
        self.local.acquire()
        try:
            self.remote.acquire()
        except BaseException:
            self.local.release()
            raise

    def release(self) -> None:
        self.remote.release()
        self.local.release()
