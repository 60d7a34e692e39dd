"""An S3 (or S3-compatible) mirror of the weights cache.

    s3://bucket/prefix/<org>/<repo>/<files>
    s3://bucket/prefix/<org>/<repo>/.orchestrator-manifest.json      uploaded last, removed first

Credentials, region and endpoint come from boto3's standard chain (AWS_ACCESS_KEY_ID, AWS_PROFILE,
AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, ~/.aws/config, ...), so MinIO, Ceph or moto work unchanged.
Each uploaded object carries its sha256 as metadata, so an interrupted push resumes too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3.session
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import ValidationError

from models.model_utils import InvalidWeightsName, validate_weights_name
from orchestrator.weights.manifest import CHUNK_BYTES, MANIFEST_NAME, Manifest, safe_relative_path
from orchestrator.weights.sources import OFFLINE_HINT, Listing, ListingSource, RemoteFile, SourceError
from orchestrator.weights.transfer import TransferReporter

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` → ("bucket", "some/prefix")."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not url.startswith("s3://") or not bucket:
        raise SourceError(f"{url!r} is not an S3 location: write s3://bucket or s3://bucket/prefix")
    return bucket, prefix.strip("/")


@contextlib.contextmanager
def s3_errors(location: str) -> Iterator[None]:
    """Turn botocore's failures into one line saying which location failed and what to do."""
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
        raise SourceError(f"no usable AWS credentials for {location} ({exc}): set AWS_ACCESS_KEY_ID and "
                          f"AWS_SECRET_ACCESS_KEY or AWS_PROFILE (and AWS_ENDPOINT_URL for an S3-compatible "
                          f"server); {OFFLINE_HINT}") from None
    except BotoConnectionError as exc:
        raise SourceError(f"cannot reach the S3 endpoint for {location} ({exc}): check AWS_ENDPOINT_URL and the "
                          f"network; {OFFLINE_HINT}") from None
    except (ResponseStreamingError, IncompleteReadError, ReadTimeoutError) as exc:
        raise SourceError(f"the connection broke while reading {location} ({exc}): the whole files fetched so far are "
                          f"kept, the torn one is not; run the same command again to resume") from None
    except S3UploadFailedError as exc:
        raise SourceError(f"upload to {location} failed: {exc}") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", str(exc))
        hint = ""
        if code in _CREDENTIAL_CODES:
            hint = "; check the AWS credentials and the bucket policy"
        elif code == "NoSuchBucket":
            hint = "; check the bucket name (and AWS_ENDPOINT_URL for an S3-compatible server)"
        raise SourceError(f"S3 refused access to {location}: {code}: {message}{hint}") from None


class S3Source(ListingSource):
    """Reads (download, pull) and writes (push) one S3 prefix."""

    def __init__(self, url: str) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.label = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            with s3_errors(self.label):
                # A fresh session per source: the default one caches credentials found earlier in the process.
                session = boto3.session.Session()
                self._client = session.client("s3", config=Config(connect_timeout=10, read_timeout=120))
        return self._client

    def key(self, name: str, path: str = "") -> str:
        return "/".join(part for part in (self.prefix, name, path) if part)

    def url(self, name: str, path: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(name, path)}"

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        with s3_errors(f"s3://{self.bucket}/{prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    def remote_manifest(self, name: str) -> Manifest | None:
        """The mirror's manifest for `name`, or None when the mirror has none (or an unreadable one)."""
        with s3_errors(self.url(name, MANIFEST_NAME)):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self.key(name, MANIFEST_NAME))["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                    return None
                raise
        try:
            return Manifest.model_validate_json(body)
        except ValidationError:
            return None

    def listing(self, name: str) -> Listing:
        manifest = self.remote_manifest(name)
        if manifest is not None:
            files = {safe_relative_path(r.path, "manifest entry"): RemoteFile(r.size, r.sha256) for r in manifest.files}
            return Listing(self.url(name), files, manifest.revision, manifest.commit)
        base = self.key(name) + "/"
        files = {safe_relative_path(obj["Key"][len(base):], "object"): RemoteFile(obj["Size"])
                 for obj in self._objects(base) if not obj["Key"].endswith("/")}
        if not files:
            raise SourceError(f"{self.url(name)} holds no weights {name!r} (no objects under it)")
        return Listing(self.url(name), files)

    def read_chunks(self, name: str, path: str) -> Iterator[bytes]:
        with s3_errors(self.url(name, path)):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self.key(name, path))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                    raise SourceError(f"{self.url(name, path)} is missing: the mirror lists it but holds no such "
                                      f"object; push {name!r} to the mirror again") from None
                raise
            body = response["Body"]
            try:
                yield from body.iter_chunks(CHUNK_BYTES)
            finally:
                body.close()

    def remote_names(self) -> list[str]:
        """Every weights name the mirror holds completely (those with a manifest)."""
        base = f"{self.prefix}/" if self.prefix else ""
        names = []
        for obj in self._objects(base):
            relative = obj["Key"][len(base):]
            if relative.endswith("/" + MANIFEST_NAME):
                name = relative.removesuffix("/" + MANIFEST_NAME)
                with contextlib.suppress(InvalidWeightsName):
                    names.append(str(validate_weights_name(name)))
        return sorted(names)

    def push(self, name: str, directory: Path, manifest: Manifest, reporter: TransferReporter) -> bool:
        """Mirror one complete cache entry; False when the mirror already held every file.

        Files whose sha256 (stored as object metadata) already matches are not uploaded again, so an
        interrupted push resumes and a mirror that lost an object is repaired. A changed entry's remote
        manifest is removed first and uploaded last: a reader never sees a half-pushed entry as complete.
        """
        remote = self.remote_manifest(name)
        unchanged = remote is not None and remote.files == manifest.files and remote.revision == manifest.revision
        uploaded = 0
        with s3_errors(self.url(name)):
            if not unchanged:
                self.client.delete_object(Bucket=self.bucket, Key=self.key(name, MANIFEST_NAME))
            for record in manifest.files:
                if self._remote_sha256(name, record.path) == record.sha256:
                    reporter.kept(record.path)
                    continue
                reporter.started(record.path, record.size)
                self.client.upload_file(str(directory / record.path), self.bucket, self.key(name, record.path),
                                        ExtraArgs={"Metadata": {"sha256": record.sha256}},
                                        Callback=lambda n, path=record.path: reporter.advanced(path, n))
                reporter.finished(record.path)
                uploaded += 1
            if not unchanged:
                self.client.put_object(Bucket=self.bucket, Key=self.key(name, MANIFEST_NAME),
                                       Body=(directory / MANIFEST_NAME).read_bytes())
        return uploaded > 0 or not unchanged

    def _remote_sha256(self, name: str, path: str) -> str | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(name, path))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise
        return head.get("Metadata", {}).get("sha256")
