"""Push, pull and download through a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import boto3.session
import pytest

from orchestrator.atomic import TMP_SUFFIX
from orchestrator.weights.cache import WeightsCache, WeightsStatus
from orchestrator.weights.manifest import MANIFEST_NAME, read_manifest
from orchestrator.weights.requirements import WeightsRequirement
from orchestrator.weights.s3 import S3Source
from orchestrator.weights.sources import LocalDirSource, SourceError
from tests.support.cli import run_cli
from tests.support.paths import ORCHESTRATOR, ROOT
from tests.support.weights import FILES, RecordingReporter, write_repo

NAMES = ("acme/tiny", "acme/other")
MIB = 1 << 20
BIG = random.Random(0).randbytes(9 * MIB + 300 * 1024)
"""Over boto3's 8 MiB multipart threshold (pushed in two parts) and read back in ten 1 MiB chunks."""
BIG_FILES = {**FILES, "model.safetensors": BIG}
BIG_NAME = "acme/big"


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


@pytest.fixture
def big_mirror(cache: WeightsCache, s3_bucket: str, tmp_path: Path) -> str:
    """The mirror `s3://<bucket>/big` holding BIG_NAME, its big file uploaded in parts."""
    write_repo(tmp_path / "mirror", BIG_NAME, BIG_FILES)
    cache.download(WeightsRequirement(BIG_NAME), LocalDirSource(tmp_path / "mirror"))
    url = f"s3://{s3_bucket}/big"
    assert cache.push(BIG_NAME, S3Source(url))
    head = S3Source(url).client.head_object(Bucket=s3_bucket, Key=f"big/{BIG_NAME}/model.safetensors")
    assert head["ETag"].strip('"').endswith("-2"), head["ETag"]  # S3's mark of a two-part upload
    return url


def _being_written(folder: Path, name: str) -> int:
    """Bytes in the temp file that is becoming `folder/name`, 0 while there is none."""
    sizes = [p.stat().st_size for p in folder.glob(f".{name}.*{TMP_SUFFIX}")] if folder.is_dir() else []
    return max(sizes, default=0)


def _assert_resumes_to_a_whole_copy(fresh: WeightsCache, url: str) -> None:
    """Not present while interrupted; the same pull again completes, verifies, and leaves no temp file."""
    assert fresh.status(WeightsRequirement(BIG_NAME)) is WeightsStatus.PARTIAL
    assert fresh.cached_names() == [] and fresh.manifest(BIG_NAME) is None
    reporter = RecordingReporter()
    assert fresh.pull(BIG_NAME, S3Source(url), reporter).fetched
    assert set(reporter.kept_files) >= {"README.md", "config.json"}  # fetched before the interruption, kept
    assert "model.safetensors" in reporter.started_files
    assert fresh.verify([BIG_NAME]) == {BIG_NAME: []} and fresh.cached_names() == [BIG_NAME]
    assert (fresh.directory(BIG_NAME) / "model.safetensors").read_bytes() == BIG
    assert not [p for p in fresh.root.rglob("*") if p.name.endswith(TMP_SUFFIX)]


@pytest.mark.parametrize("seed", [1, 2])
def test_a_pull_killed_mid_file_resumes_to_a_verified_copy(big_mirror: str, s3_link, tmp_path: Path,
                                                           seed: int) -> None:
    """`orchestrator models pull` SIGKILLed at a seeded byte of the big file, over a link slow enough to hit it."""
    at = random.Random(seed).randrange(MIB, len(BIG) - MIB)
    link = s3_link(rate=8 * MIB)
    fresh = WeightsCache(tmp_path / "fresh")
    pull = subprocess.Popen([*ORCHESTRATOR, "models", "pull", "--from", big_mirror, "--models", BIG_NAME,
                             "--weights-dir", str(fresh.root)], cwd=ROOT, env={**os.environ, "AWS_ENDPOINT_URL":
                                                                                link.endpoint},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial, deadline = fresh.partial_directory(BIG_NAME), time.monotonic() + 60
    while _being_written(partial, "model.safetensors") < at:
        assert pull.poll() is None and time.monotonic() < deadline, pull.communicate()
        time.sleep(0.005)
    pull.kill()
    pull.communicate(timeout=30)
    assert at <= _being_written(partial, "model.safetensors") < len(BIG)  # killed mid-file, the torn file left
    _assert_resumes_to_a_whole_copy(fresh, big_mirror)


@pytest.mark.parametrize("seed", [3, 4])
def test_a_link_dropped_mid_file_fails_in_one_line_and_the_rerun_completes(big_mirror: str, s3_link, s3_endpoint: str,
                                                                          tmp_path: Path, seed: int,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    link = s3_link(cut_after=random.Random(seed).randrange(MIB, len(BIG) - MIB))
    monkeypatch.setenv("AWS_ENDPOINT_URL", link.endpoint)
    fresh = WeightsCache(tmp_path / "fresh")
    with pytest.raises(SourceError, match=rf"the connection broke while reading {big_mirror}/{BIG_NAME}/"
                                          rf"model.safetensors \(.*read.*\): .*; run the same command again to resume"):
        fresh.pull(BIG_NAME, S3Source(big_mirror))
    assert link.cut.is_set()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    _assert_resumes_to_a_whole_copy(fresh, big_mirror)
