"""Push, pull and download through a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import boto3.session
import pytest

from orchestrator.weights.cache import WeightsCache, WeightsStatus
from orchestrator.weights.manifest import MANIFEST_NAME, read_manifest
from orchestrator.weights.requirements import WeightsRequirement
from orchestrator.weights.s3 import S3Source
from orchestrator.weights.sources import LocalDirSource, SourceError
from tests.orchestrator.weights.conftest import FILES, RecordingReporter, run_cli, write_repo

NAMES = ("acme/tiny", "acme/other")


@pytest.fixture
def filled(cache: WeightsCache, tmp_path: Path) -> WeightsCache:
    """A cache holding two complete weights names."""
    for name in NAMES:
        write_repo(tmp_path / "mirror", name)
        cache.download(WeightsRequirement(name), LocalDirSource(tmp_path / "mirror"))
    return cache


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME and not p.name.endswith(".lock")}


def test_push_wipe_pull_is_byte_identical(filled: WeightsCache, s3_bucket: str) -> None:
    before = _snapshot(filled.root)
    manifests = {name: filled.manifest(name) for name in NAMES}
    target = S3Source(f"s3://{s3_bucket}/team/weights")
    assert [filled.push(name, target) for name in NAMES] == [True, True]
    assert [filled.push(name, target) for name in NAMES] == [False, False]  # already mirrored
    assert target.remote_names() == sorted(NAMES)
    shutil.rmtree(filled.root)
    assert filled.cached_names() == []
    for name in NAMES:
        assert filled.pull(name, target).fetched
    assert _snapshot(filled.root) == before
    for name in NAMES:
        pulled = filled.manifest(name)
        assert pulled is not None and pulled.files == manifests[name].files  # type: ignore[union-attr]
        assert pulled.source == f"s3://{s3_bucket}/team/weights/{name}"
        assert not filled.pull(name, target).fetched


def test_interrupted_pull_resumes(filled: WeightsCache, s3_bucket: str, tmp_path: Path) -> None:
    target = S3Source(f"s3://{s3_bucket}")
    filled.push(NAMES[0], target)
    fresh = WeightsCache(tmp_path / "fresh")
    first = RecordingReporter(interrupt_after=2)
    with pytest.raises(KeyboardInterrupt):
        fresh.pull(NAMES[0], target, first)
    assert fresh.status(WeightsRequirement(NAMES[0])) is WeightsStatus.PARTIAL
    second = RecordingReporter()
    assert fresh.pull(NAMES[0], target, second).fetched
    assert second.kept_files == first.finished_files and len(second.started_files) == len(FILES) - 2
    assert fresh.verify([NAMES[0]]) == {NAMES[0]: []}
    assert (fresh.directory(NAMES[0]) / "model.safetensors").read_bytes() == FILES["model.safetensors"]


def test_a_missing_object_is_reported_and_nothing_looks_present(filled: WeightsCache, s3_bucket: str,
                                                                  tmp_path: Path) -> None:
    target = S3Source(f"s3://{s3_bucket}/m")
    filled.push(NAMES[0], target)
    target.client.delete_object(Bucket=s3_bucket, Key=f"m/{NAMES[0]}/sub/tokenizer.json")
    fresh = WeightsCache(tmp_path / "fresh")
    with pytest.raises(SourceError, match=rf"s3://{s3_bucket}/m/acme/tiny/sub/tokenizer.json is missing: the "
                                          rf"mirror lists it but holds no such object; push 'acme/tiny'"):
        fresh.pull(NAMES[0], target)
    assert fresh.status(WeightsRequirement(NAMES[0])) is WeightsStatus.PARTIAL
    reporter = RecordingReporter()
    assert filled.push(NAMES[0], target, reporter)  # as the message says: pushing again repairs the mirror
    assert reporter.started_files == ["sub/tokenizer.json"]
    assert fresh.pull(NAMES[0], target).fetched and fresh.verify([NAMES[0]]) == {NAMES[0]: []}
    with pytest.raises(SourceError, match=r"holds no weights 'acme/none'"):
        fresh.download(WeightsRequirement("acme/none"), target)


def test_download_from_a_plain_prefix_honours_id_file_mapping(cache: WeightsCache, s3_bucket: str) -> None:
    client = boto3.session.Session().client("s3")
    for path, data in FILES.items():
        client.put_object(Bucket=s3_bucket, Key=f"plain/acme/tiny/{path}", Body=data)
    source = S3Source(f"s3://{s3_bucket}/plain/")
    requirement = WeightsRequirement("acme/tiny", ("config.json", "sub/tokenizer.json"))
    assert cache.download(requirement, source).fetched
    assert sorted(read_manifest(cache.directory("acme/tiny")).paths()) == list(requirement.files)  # type: ignore
    with pytest.raises(SourceError, match=r"lacks vocab.txt, which id_file_mapping of 'acme/tiny' asks for"):
        cache.download(WeightsRequirement("acme/tiny", ("vocab.txt",)), source)


def test_missing_credentials_say_what_to_set(cache: WeightsCache, s3_bucket: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(SourceError, match=r"no usable AWS credentials for s3://.*AWS_ACCESS_KEY_ID.*--from /that/dir"):
        cache.download(WeightsRequirement("acme/tiny"), S3Source(f"s3://{s3_bucket}"))
    assert not cache.partial_directory("acme/tiny").exists()


def test_an_unreachable_endpoint_says_how_to_go_offline(cache: WeightsCache, s3_bucket: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(SourceError, match=r"cannot reach the S3 endpoint for s3://.*HF_HUB_OFFLINE=1"):
        cache.download(WeightsRequirement("acme/tiny"), S3Source(f"s3://{s3_bucket}"))
    with pytest.raises(SourceError, match=r"not an S3 location"):
        S3Source("s3://")


def test_cli_push_and_pull(filled: WeightsCache, s3_bucket: str, tmp_path: Path) -> None:
    pushed = run_cli("models", "push", "--to", f"s3://{s3_bucket}/cli", "--weights-dir", str(filled.root))
    assert pushed.returncode == 0, pushed.stderr
    assert "acme/other: pushed" in pushed.stdout and "2 weights mirrored" in pushed.stdout
    elsewhere = tmp_path / "elsewhere"
    pulled = run_cli("models", "pull", "--from", f"s3://{s3_bucket}/cli", "--models", "acme/tiny",
                     "--weights-dir", str(elsewhere))
    assert pulled.returncode == 0, pulled.stderr
    assert WeightsCache(elsewhere).cached_names() == ["acme/tiny"]


def test_a_wrong_bucket_is_named(s3_bucket: str) -> None:
    with pytest.raises(SourceError, match=rf"S3 refused access to s3://nope-{s3_bucket}/: NoSuchBucket: .*check the "
                                          rf"bucket name"):
        S3Source(f"s3://nope-{s3_bucket}").remote_names()
