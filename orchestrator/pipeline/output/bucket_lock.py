"""One run at a time per bucket output folder: a lock object with an owner and a lease.

    <folder>/.lock   {"token", "pid", "host", "boot", "pids", "started", "lease_s", "renewals"} of the run
                     that owns the folder: created only if absent (a conditional PUT, If-None-Match),
                     renewed while the run lives (If-Match its own ETag), taken over from a gone run by a
                     PUT conditional on the ETag seen

A second run is refused with who holds the folder. A lock is gone once the store's own clock says it was
last renewed more than its `lease_s` ago (no two machines' clocks are compared), or at once when its process
is dead on this very machine (same boot, pid namespace and host; same process start). Two runs taking over
the same gone lock cannot both win: the conditional PUT lets one through.

The run checks its lease before every write to the folder (`BucketFolder.guard`): once another run took the
lock, or renewing it failed for most of a lease, the run stops writing rather than share the folder. A store
that ignores conditional writes cannot hold such a lock, and the run refuses it (AWS S3, MinIO, R2 have them).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any

import psutil

from orchestrator.errors import ConfigError, OutputBusy, PipelineError
from orchestrator.pipeline.output.bucket import BucketFolder
from workers.media.s3 import ObjectError, client, errors

LOCK_KEY = ".lock"
LEASE_S = 120.0
"""How long a lock object holds without renewal: a run killed on another machine is taken over after this."""
RENEWALS_PER_LEASE = 4
TRUST_SHARE = 0.75
"""The share of a lease after the last renewal that the run still writes: renewals failing longer than this
stop it before the lease could run out under another run's takeover."""


class BucketLock:
    """The exclusive claim on one bucket output folder, with the interface of OutputLock."""

    def __init__(self, folder: BucketFolder, lease_s: float = LEASE_S) -> None:
        self.folder = folder
        self.lease_s = lease_s
        self._token = ""
        self._etag: str | None = None
        self._renewed_at = 0.0
        self._renewals = 0
        self._lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._etag is not None

    def acquire(self) -> None:
        """Take the folder, or raise OutputBusy naming the run that holds it (ConfigError when the bucket
        cannot be reached or written, or ignores conditional writes)."""
        if self.held:
            return
        self._token, self._lost = uuid.uuid4().hex, None
        self._stop.clear()
        asked_at = _now()
        try:
            self._take()
            self._check_conditions_hold()
        except ObjectError as exc:
            raise ConfigError(f"{exc}") from None
        self._renewed_at = asked_at
        self._renewer = threading.Thread(target=self._renew_while_held, name="output-lock", daemon=True)
        self._renewer.start()

    def check(self) -> None:
        """Raise PipelineError unless this run still owns the folder: what every write to it asks first."""
        if self._lost is None and _now() - self._renewed_at > TRUST_SHARE * self.lease_s:
            self._lost = f"renewing its lock object failed for {_now() - self._renewed_at:.0f} s"
        if self._lost is not None:
            raise PipelineError(f"output {self.folder.url}: this run no longer owns the folder ({self._lost}), "
                                f"so it stopped writing there; finished videos are kept: rerun once no other "
                                f"run writes it")

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        with self._mutex:
            etag, self._etag = self._etag, None
        try:
            if etag is not None and self._lost is None:
                self._delete_ours(etag)
        except ObjectError:
            pass  # its lease runs out on its own

    def _take(self) -> None:
        for _ in range(3):
            if self._put(IfNoneMatch="*"):
                return
            owner, etag, age = self._read()
            if owner is None or etag is None:
                continue  # released between the two calls: create it again
            if owner.get("token") == self._token:  # our create landed, its answer was lost: ours
                with self._mutex:
                    self._etag = etag
                return
            if not _gone(owner, age):
                raise OutputBusy(f"output {self.folder.url} is in use by another run (pid {owner.get('pid')} "
                                 f"on {owner.get('host')}); wait for it to end, or choose another --output")
            if self._put(IfMatch=etag):  # the takeover: only one of the runs replacing this version wins
                return
        raise OutputBusy(f"output {self.folder.url} was just taken by another run; choose another --output")

    def _check_conditions_hold(self) -> None:
        """A second create of the lock, and a write naming a version it never had, must both be refused; a
        store that accepts either ignores conditional writes, and no lock holds there."""
        ignored = [name for name, condition in (("If-None-Match", {"IfNoneMatch": "*"}),
                                                ("If-Match", {"IfMatch": '"0123456789abcdef0123456789abcdef"'}))
                   if self._put(keep_etag=False, **condition)]
        if ignored:
            with contextlib.suppress(ObjectError):
                self._delete_ours(self._etag or "")
            self._etag = None
            raise ConfigError(f"output {self.folder.url}: the store ignores conditional writes ({ignored[0]}), so "
                              f"no run could keep another out of the folder; use a store that has them (AWS S3, "
                              f"MinIO, R2) or a local --output")

    def _body(self) -> bytes:
        return json.dumps({"token": self._token, "pid": os.getpid(), "host": socket.gethostname(),
                           "boot": _boot_id(), "pids": _pid_namespace(), "started": _started(),
                           "lease_s": self.lease_s,
                           "renewals": self._renewals}).encode()

    def _put(self, keep_etag: bool = True, **condition: str) -> bool:
        """Put this run's lock body under `condition`; False when the store refuses the condition (412)."""
        try:
            with errors(self.folder.location(LOCK_KEY), "PutObject"):
                answer = client().put_object(Bucket=self.folder.bucket, Key=self.folder.key(LOCK_KEY),
                                             Body=self._body(), **condition)
        except ObjectError as exc:
            if exc.code in ("changed", "not_found"):
                return False
            raise
        if keep_etag and not self._stop.is_set():  # a renewal answered after release keeps nothing
            with self._mutex:
                self._etag = answer["ETag"]
        return True

    def _read(self) -> tuple[dict[str, Any] | None, str | None, float | None]:
        """The lock's owner, ETag, and age by the store's clock (None where the store gives no date)."""
        try:
            with errors(self.folder.location(LOCK_KEY), "GetObject"):
                answer = client().get_object(Bucket=self.folder.bucket, Key=self.folder.key(LOCK_KEY))
                body = answer["Body"].read()
        except ObjectError as exc:
            if exc.code == "not_found":
                return None, None, None
            raise
        try:
            owner = json.loads(body)
        except ValueError:
            owner = {}
        return (owner if isinstance(owner, dict) else {}), answer["ETag"], _age(answer)

    def _delete_ours(self, etag: str) -> None:
        """Delete the lock if it is still this run's: by its ETag, or, when a renewal landed unseen, by its
        token."""
        for _ in range(2):
            try:
                with errors(self.folder.location(LOCK_KEY), "DeleteObject"):
                    client().delete_object(Bucket=self.folder.bucket, Key=self.folder.key(LOCK_KEY), IfMatch=etag)
                return
            except ObjectError as exc:
                if exc.code == "not_found":
                    return
                if exc.code != "changed":
                    raise
            owner, seen, _ = self._read()
            if owner is None or seen is None or owner.get("token") != self._token:
                return  # another run's now: never ours to delete
            etag = seen

    def _renew_while_held(self) -> None:
        while not self._stop.wait(self.lease_s / RENEWALS_PER_LEASE):
            try:
                self._renew()
            except Exception:  # noqa: BLE001 - a store briefly unreachable: `check` stops the run if it lasts
                continue
            if self._lost is not None:
                return

    def _renew(self) -> None:
        if self._etag is None:  # released meanwhile: nothing to renew (an empty If-Match is no condition)
            return
        self._renewals += 1  # each renewal's body, so its ETag, differs from the last
        asked_at = _now()  # the store starts the lease when it takes the request, not when its answer arrives
        if self._put(IfMatch=self._etag):
            self._renewed_at = asked_at
            return
        owner, etag, _ = self._read()  # refused: our last renewal's answer was lost, or another run took it
        if owner is not None and etag is not None and owner.get("token") == self._token:
            with self._mutex:
                self._etag = etag
            return
        holder = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "nobody"
        self._lost = f"its lock object was taken over; it now names {holder}"


def _gone(owner: dict[str, Any], age: float | None) -> bool:
    """Whether the run that wrote this lock has ended: its lease ran out by the store's clock, or its process
    on this machine (this boot) is dead or another process now."""
    lease = owner.get("lease_s", LEASE_S)
    if not isinstance(lease, (int, float)) or (age is not None and age >= lease):
        return True
    pid, started = owner.get("pid"), owner.get("started")
    here = {"boot": _boot_id(), "pids": _pid_namespace(), "host": socket.gethostname()}
    if not all(here.values()) or any(owner.get(name) != value for name, value in here.items()) \
            or not isinstance(pid, int):
        return False  # another machine's or container's run (its pids are not ours to look up): the lease tells
    try:
        return isinstance(started, (int, float)) and abs(psutil.Process(pid).create_time() - started) > 1
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # not ours to inspect (hidden /proc): alive as far as this run can tell
        return False


def _age(answer: dict[str, Any]) -> float | None:
    """Seconds since the object was last written, both times the store's."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    modified = answer.get("LastModified")
    if modified is None:
        return None
    try:
        now = parsedate_to_datetime(date) if date else None
        if now is None or now.tzinfo is None:  # no usable store clock: this machine's, in UTC
            now = datetime.now(UTC)
        return (now - modified).total_seconds()
    except (TypeError, ValueError):
        return None


@cache
def _boot_id() -> str:
    """This machine's current boot (a pid means the same process only within one)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            return boot.read().strip()
    except OSError:
        return ""


@cache
def _pid_namespace() -> str:
    """This process's pid namespace: containers on one machine share its boot, not their pids."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _now() -> float:
    """Seconds on a clock that keeps counting while the machine sleeps (a lease runs on meanwhile)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


@cache
def _started() -> float:
    return psutil.Process().create_time()


class BucketOutputLock:
    """A bucket output's two claims: its local working copy's (one run per machine writes it), then the
    bucket's lock object (one run anywhere). Every write to the folder first checks the second still holds."""

    def __init__(self, folder: BucketFolder, lease_s: float = LEASE_S) -> None:
        from orchestrator.pipeline.output.lock import OutputLock

        self.local = OutputLock(folder.local)
        self.remote = BucketLock(folder, lease_s)
        folder.guard = self.remote.check

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
