"""Videos read in place from S3 or an S3-compatible store (MinIO, Ceph, R2): listed, checked, and read
through a seekable file that PyAV decodes from, one ranged GET per block (or copied whole, `download`, for
a run that caches its inputs); clips encoded for an s3:// output uploaded from where they were encoded.

    s3://bucket/prefix/        every video object under the prefix (paginated listing)
    s3://bucket/a/*.mp4        the objects matching the pattern (`*`, `?`, `[..]` within one path level,
                               `**` across any number of them)
    s3://bucket/a/b.mp4        that object

Credentials, region and endpoint come from boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_PROFILE /
an instance role, AWS_ENDPOINT_URL for an S3-compatible server). Every read of an object names the ETag the
reader saw when it opened it (If-Match), so an object replaced while a run reads it fails that video instead
of mixing two versions. Errors are one line naming the bucket, the key and the operation.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

S3_SCHEME = "s3://"
READ_AHEAD = 4 << 20
"""Bytes one ranged GET fetches (a block): a decoder's small sequential reads cost one request per block."""
BLOCK_CACHE_BYTES = 256 << 20
"""What a run's media workers keep of the blocks they fetched, for the other steps reading the same video."""
FREE_SHARE = 4
"""The cache takes at most this fraction (1/4) of its file system's free room: frames come first there."""
BODY_ATTEMPTS = 3
"""Tries at one block's GET whose body broke off mid-read (botocore retries the request, not the body)."""
MULTIPART_BYTES = 16 << 20
"""A clip larger than this is uploaded in parts of this size."""
_WILDCARD = re.compile(r"[*?\[]")
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "AllAccessDisabled"}
_CHANGED = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


class ObjectError(OSError):
    """An object store refused or failed an operation: one line naming the bucket, key and operation."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code
        """What went wrong, for callers that act on it: "not_found", "denied", "changed", or ""."""

    def __str__(self) -> str:
        return str(self.args[0])


def is_s3(location: object) -> bool:
    return isinstance(location, str) and location.startswith(S3_SCHEME)


def split_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/key` → ("bucket", "some/key")."""
    bucket, _, key = url.removeprefix(S3_SCHEME).partition("/")
    if not url.startswith(S3_SCHEME) or not bucket:
        raise ObjectError(f"{url!r} is not an S3 location: write s3://bucket/prefix/ or s3://bucket/key")
    return bucket, key


@dataclass(frozen=True)
class ObjectStat:
    """Which version of an object a run read: a changed object (new ETag, size or version) is another video."""

    size: int
    etag: str
    version: str = ""

    def fingerprint(self, url: str) -> str:
        key = f"{url}\0{self.size}\0{self.etag}\0{self.version}"
        return hashlib.sha256(key.encode()).hexdigest()[:20]


_local = threading.local()


def client() -> Any:
    """This thread's S3 client (boto3's clients are not to be shared across threads), made on first use
    from the standard chain, with bounded timeouts and retries."""
    made = getattr(_local, "client", None)
    if made is None:
        import boto3.session
        from botocore.config import Config

        with errors("s3://", "connect"):
            session = boto3.session.Session()  # a fresh one: the default session caches credentials found earlier
            made = _local.client = session.client("s3", config=Config(
                connect_timeout=10, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"}))
    return made


@contextlib.contextmanager
def errors(url: str, operation: str) -> Iterator[None]:
    """botocore's failures as ObjectError, in one line saying what failed where and what to do."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "?"))
        if code in _NOT_FOUND:
            raise ObjectError(f"{url}: no such object ({operation})", "not_found") from None
        if code == "NoSuchBucket":
            raise ObjectError(f"{url}: the bucket {split_url(url)[0]!r} does not exist ({operation}); check the "
                              f"bucket name, and AWS_ENDPOINT_URL for an S3-compatible server") from None
        if code in _DENIED:
            raise ObjectError(f"{url}: access denied ({operation}, {code}); check the AWS credentials and the "
                              f"bucket policy", "denied") from None
        if code in _CHANGED:
            raise ObjectError(f"{url}: the object changed while the run read it ({operation}); rerun the same "
                              f"command to read its new version", "changed") from None
        raise ObjectError(f"{url}: S3 refused {operation} ({code}: {error.get('Message', exc)})") from None
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise ObjectError(f"{url}: no usable AWS credentials for {operation} ({exc}); set AWS_ACCESS_KEY_ID and "
                          f"AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from None
    except BotoCoreError as exc:
        raise ObjectError(f"{url}: {operation} failed ({exc}); check AWS_ENDPOINT_URL and the network") from None


def stat(url: str) -> ObjectStat:
    """The object's size and version now (HEAD)."""
    bucket, key = split_url(url)
    with errors(url, "HeadObject"):
        head = client().head_object(Bucket=bucket, Key=key)
    return ObjectStat(int(head["ContentLength"]), head.get("ETag", ""), head.get("VersionId") or "")


def download(url: str, version: ObjectStat, target: Path) -> None:
    """The object's version `version`, whole, into `target` (through `<target>.part`, renamed once complete;
    a replaced object fails the download)."""
    bucket, key = split_url(url)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with errors(url, "GetObject"):
            response = client().get_object(Bucket=bucket, Key=key,
                                           **({"IfMatch": version.etag} if version.etag else {}))
            with partial.open("wb") as sink:
                for chunk in response["Body"].iter_chunks(1 << 20):
                    sink.write(chunk)
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)


def upload(path: Path, url: str) -> None:
    """A local file into the object `url`: in one PUT, or in parts above `MULTIPART_BYTES` (boto3's managed
    transfer). An object appears whole or not at all, so a killed upload leaves nothing under its name."""
    from boto3.s3.transfer import TransferConfig

    bucket, key = split_url(url)
    with errors(url, "PutObject"):
        client().upload_file(str(path), bucket, key, Config=TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES, use_threads=False))


def list_objects(pattern: str, suffixes: frozenset[str]) -> Iterator[tuple[str, ObjectStat]]:
    """The objects a pattern names, in key order as the store lists them, page by page: a key itself; a
    prefix (every object under it whose name ends in one of `suffixes`); or a pattern with wildcards (the
    objects under its fixed part that match it, level by level)."""
    bucket, key = split_url(pattern)
    if _WILDCARD.search(key) is None and key and not key.endswith("/"):
        try:
            found = stat(pattern)  # the object itself
        except ObjectError as exc:
            if exc.code not in ("not_found", "denied"):  # a denied HEAD may still be a listable prefix
                raise
        else:
            yield pattern, found
            return
        key += "/"  # a prefix given without its slash
    wild = _WILDCARD.search(key)
    prefix = key[:wild.start()] if wild else key
    levels = key.split("/")
    for found, entry in _listed(bucket, prefix):
        if wild is not None and not _matches(found.split("/"), levels):
            continue
        if wild is None and not found.lower().endswith(tuple(suffixes)):
            continue
        yield f"{S3_SCHEME}{bucket}/{found}", entry


def _listed(bucket: str, prefix: str) -> Iterator[tuple[str, ObjectStat]]:
    url = f"{S3_SCHEME}{bucket}/{prefix}"
    with errors(url, "ListObjectsV2"):
        for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                if not entry["Key"].endswith("/"):
                    yield entry["Key"], ObjectStat(int(entry["Size"]), entry.get("ETag", ""))


def _matches(parts: list[str], levels: list[str]) -> bool:
    """A key's levels against a pattern's: `**` takes any number of levels (none too), as a local glob's."""
    if not levels:
        return not parts
    if levels[0] == "**":
        return any(_matches(parts[skip:], levels[1:]) for skip in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], levels[0]) and _matches(parts[1:], levels[1:])


class BlockCache:
    """Blocks of objects kept in a folder the media workers of a run on one host share (on Ray, one media
    replica's), so a video that several steps decode (the split's windows, the cut, the encode) is fetched
    from the store once. Files are named by
    the object's URL and ETag and the block's index, written whole (rename) and evicted oldest first past
    `limit` bytes; a block evicted under a reader is fetched again."""

    def __init__(self, folder: Path, limit: int = BLOCK_CACHE_BYTES) -> None:
        self.folder, self.limit = folder, limit

    def get(self, name: str) -> bytes | None:
        try:
            return (self.folder / name).read_bytes()
        except OSError:
            return None

    def put(self, name: str, data: bytes) -> None:
        partial = self.folder / f".{name}.{os.getpid()}.part"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.folder).free
            if len(data) > free // FREE_SHARE:
                return  # the folder's file system is short of room: the frames need it more
            partial.write_bytes(data)
            partial.rename(self.folder / name)
            self._evict(free // FREE_SHARE)
        except OSError:
            partial.unlink(missing_ok=True)  # a full or vanished folder only costs a fetch later

    def _evict(self, room: int) -> None:
        """Oldest blocks out until the folder holds at most `limit` bytes, and at most `room`."""
        limit = min(self.limit, room)
        entries = []
        for entry in os.scandir(self.folder):
            with contextlib.suppress(OSError):
                info = entry.stat()
                entries.append((info.st_mtime_ns, info.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= limit:
                return
            with contextlib.suppress(OSError):
                os.unlink(path)
            total -= size


class ObjectReader(io.RawIOBase):
    """An object as a seekable, read-only file, read in aligned blocks of `block_size` bytes, one ranged GET
    each, naming the ETag seen when it was opened (a replaced object fails the read), from `cache` where a
    block is there. `fetched` counts the bytes transferred from the store."""

    def __init__(self, url: str, block_size: int = READ_AHEAD, version: ObjectStat | None = None,
                 cache: BlockCache | None = None) -> None:
        super().__init__()
        self.url = url
        self.bucket, self.key = split_url(url)
        self.version = version or stat(url)
        self.block_size = block_size
        self.cache = cache
        self.fetched = 0
        self._position = 0
        self._block = b""
        self._block_index = -1
        self._tag = hashlib.sha256(f"{url}\0{self.version.etag}\0{block_size}".encode()).hexdigest()[:24]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.version.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` from the current position (less only at the object's end)."""
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._position < self.version.size:
            index, offset = divmod(self._position, self.block_size)
            if index != self._block_index:
                self._block, self._block_index = self._read_block(index), index
            piece = self._block[offset:offset + len(view) - filled]
            if not piece:
                break  # the store holds less than it said: the decoder sees the end
            view[filled:filled + len(piece)] = piece
            filled += len(piece)
            self._position += len(piece)
        return filled

    def _read_block(self, index: int) -> bytes:
        name = f"{self._tag}.{index}"
        if self.cache is not None and (cached := self.cache.get(name)) is not None:
            return cached
        start = index * self.block_size
        end = min(start + self.block_size, self.version.size) - 1
        data = self._get(start, end)
        self.fetched += len(data)
        if self.cache is not None:
            self.cache.put(name, data)
        return data

    def _get(self, start: int, end: int) -> bytes:
        from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

        for attempt in range(BODY_ATTEMPTS):
            with errors(self.url, "GetObject"):
                response = client().get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end}",
                                               **({"IfMatch": self.version.etag} if self.version.etag else {}))
            try:
                return response["Body"].read()
            except (ResponseStreamingError, IncompleteReadError, ReadTimeoutError) as exc:
                if attempt == BODY_ATTEMPTS - 1:
                    raise ObjectError(f"{self.url}: the connection broke while reading bytes {start}-{end} "
                                      f"({BODY_ATTEMPTS} tries, GetObject: {exc}); check the network and rerun "
                                      f"(finished videos are kept)") from None
        raise AssertionError("unreachable")
