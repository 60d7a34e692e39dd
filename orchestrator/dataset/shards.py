"""WebDataset shards of an output folder's kept clips, for training loaders that stream tars.

    <out>/shards/<width>x<height>/shard-000000.tar   samples in clip-id order: <key>.mp4 (the clip file) and
                                                     <key>.json (its row), adjacent, as WebDataset groups them
    <out>/shards/manifest.json                       written last: every shard, its samples, bytes and sha256

A shard holds the clips of one frame size: a loader batches them without resizing, and one that buckets by
aspect ratio reads each group's `aspect` from the manifest. Shards are cut by bytes (`max_bytes`, the whole
tar as written); a clip larger than that alone gets a shard of its own.

Shards are rewritten whole from the rows each time, so they never hold a clip the rows no longer keep (one
dedup marked, one a rerun dropped) nor one twice: the manifest is removed first, each tar replaces its name
atomically (temp file, fsync, rename), tars no longer planned are removed, and the manifest comes last. Its
presence is what says the shards are complete and match each other; a crash midway leaves none, and the next
write starts over. The tars are deterministic (sorted samples, fixed owner, mode and times): the same rows
give the same bytes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import re
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av

from orchestrator.atomic import TMP_SUFFIX, atomic_file, atomic_write_text, fsync_directory
from orchestrator.dataset.table import is_kept
from orchestrator.errors import ConfigError, OutputFull, PipelineError
from orchestrator.pipeline.output.parts import read_parts

SHARDS_DIR = "shards"
MANIFEST = "manifest.json"
_FORMAT = tarfile.PAX_FORMAT
_BLOCK = tarfile.BLOCKSIZE
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(value: object) -> int:
    """Bytes from a whole number or a size such as `500MB`, `1GB`, `2GiB` (decimal and binary units)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value) if isinstance(value, str) else None
        if match is None or match.group(2).upper() not in _UNITS:
            raise ValueError(f"{value!r} is not a size: give bytes or a number with KB, MB, GB, TB (or KiB, "
                             f"MiB, GiB, TiB), e.g. 1GB")
        number, unit = float(match.group(1)), match.group(2).upper()
    size = int(number * _UNITS[unit])
    if size < 1:
        raise ValueError(f"{value!r}: a shard size must be at least one byte")
    return size


def clip_id(row: dict[str, Any]) -> str:
    """The row's `clip_id`, or, for rows written without one, its clip file's stem (`<video_id>_<index:04d>`)."""
    return str(row.get("clip_id") or Path(str(row["path"])).stem)


def sample_key(clip: str) -> str:
    """The clip id as a WebDataset key: WebDataset reads a member's key up to its name's first dot."""
    return clip.replace(".", "_")


@dataclass(frozen=True)
class Sample:
    """One kept clip as it goes into a shard: its key, its file, its frame size and its row (as JSON bytes)."""

    key: str
    path: Path
    width: int
    height: int
    row: bytes

    @property
    def group(self) -> str:
        return f"{self.width}x{self.height}"

    def members(self) -> list[tarfile.TarInfo]:
        return [_member(f"{self.key}.mp4", self.path.stat().st_size), _member(f"{self.key}.json", len(self.row))]

    def tar_bytes(self) -> int:
        """What this sample adds to a tar: each member's header (with its PAX record, if any) and padded data."""
        return sum(len(m.tobuf(_FORMAT)) + _padded(m.size) for m in self.members())


@dataclass(frozen=True)
class ShardRecord:
    """One written shard, as the manifest lists it."""

    path: str
    """Relative to the shards folder."""
    samples: list[str]
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardsManifest:
    """What a complete set of shards holds."""

    max_bytes: int
    samples: int
    groups: dict[str, dict[str, Any]]
    """Per group (`<width>x<height>`): width, height, aspect (width / height) and the count of samples."""
    shards: list[ShardRecord]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uname = info.gname = ""
    return info


def _padded(size: int) -> int:
    return math.ceil(size / _BLOCK) * _BLOCK


def tar_size(samples: list[Sample]) -> int:
    """The bytes of a tar of `samples` as `tarfile` writes it: members, two zero blocks, padded to a record."""
    body = sum(s.tar_bytes() for s in samples) + 2 * _BLOCK
    return _padded_to(body, tarfile.RECORDSIZE)


def _padded_to(size: int, unit: int) -> int:
    return math.ceil(size / unit) * unit


def plan_shards(samples: list[Sample], max_bytes: int) -> dict[str, list[list[Sample]]]:
    """Each group's samples in key order, cut into shards of at most `max_bytes` (a larger sample alone)."""
    groups: dict[str, list[list[Sample]]] = {}
    for sample in sorted(samples, key=lambda s: (s.group, s.key)):
        shards = groups.setdefault(sample.group, [[]])
        if shards[-1] and tar_size([*shards[-1], sample]) > max_bytes:
            shards.append([])
        shards[-1].append(sample)
    return groups


def kept_samples(out_dir: Path) -> list[Sample]:
    """Every kept clip of the folder's finished videos, its frame size read from the clip file itself."""
    samples = []
    for part in read_parts(out_dir / ".parts").values():
        for row in part.rows:
            if is_kept(row) and row.get("path"):  # a run with clips: {encode: none} has no file to pack
                clip = clip_id(row)
                path = out_dir / str(row["path"])
                width, height = _frame_size(path, out_dir)
                text = json.dumps({**row, "clip_id": clip}, sort_keys=True, ensure_ascii=False)
                samples.append(Sample(sample_key(clip), path, width, height, text.encode()))
    return samples


def _frame_size(path: Path, out_dir: Path) -> tuple[int, int]:
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return stream.codec_context.width, stream.codec_context.height
    except (OSError, IndexError, av.error.FFmpegError) as exc:
        raise PipelineError(f"{path}: a kept clip of {out_dir} cannot be read ({exc}); rerun the pipeline on "
                            f"that folder to redo its video, then write the shards again") from None


class _Hashing(io.RawIOBase):
    """Passes writes on to a file while hashing them (tarfile asks where it is, so `tell` too)."""

    def __init__(self, target: BinaryIO) -> None:
        self.target, self.digest, self.written = target, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.target.write(data)
        self.digest.update(data)
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written


def _write_tar(path: Path, samples: list[Sample]) -> tuple[int, str]:
    """Write one shard atomically; its bytes and sha256."""
    with atomic_file(path) as handle:
        sink = _Hashing(handle)
        with tarfile.open(fileobj=sink, mode="w", format=_FORMAT) as tar:  # type: ignore[call-overload]
            for sample in samples:
                video, row = sample.members()
                with sample.path.open("rb") as clip:
                    tar.addfile(video, clip)
                tar.addfile(row, io.BytesIO(sample.row))
    return sink.written, sink.digest.hexdigest()


def write_shards(out_dir: Path, max_bytes: int) -> ShardsManifest:
    """Rewrite `<out>/shards/` whole from the folder's kept clips; the caller holds the folder's lock."""
    if not (out_dir / ".parts").is_dir():
        raise ConfigError(f"{out_dir} holds no pipeline results (no .parts folder); give the output folder of "
                          f"an `orchestrator run`")
    plan = plan_shards(kept_samples(out_dir), max_bytes)
    root = out_dir / SHARDS_DIR
    try:
        root.mkdir(exist_ok=True)
        (root / MANIFEST).unlink(missing_ok=True)
        fsync_directory(root)
        records = []
        for group, shards in plan.items():
            (root / group).mkdir(exist_ok=True)
            for number, samples in enumerate(shards):
                name = f"{group}/shard-{number:06d}.tar"
                size, digest = _write_tar(root / name, samples)
                records.append(ShardRecord(name, [s.key for s in samples], size, digest))
        _remove_unplanned(root, {r.path for r in records})
        manifest = _manifest(plan, records, max_bytes)
        atomic_write_text(root / MANIFEST, json.dumps(manifest.to_json(), indent=2) + "\n")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputFull(f"{root}: no space left on device writing shards; free some space and write them "
                             f"again (`orchestrator shards {out_dir}`)") from None
        raise PipelineError(f"cannot write shards to {root} ({exc.strerror}: {exc.filename})") from None
    return manifest


def _remove_unplanned(root: Path, planned: set[str]) -> None:
    """Tars (and temp files) an earlier write left that this one did not write, a killed write's temp
    manifest, and groups left empty."""
    for path in root.glob(f".*{TMP_SUFFIX}"):
        path.unlink(missing_ok=True)
    for path in sorted(root.glob("*/*")):
        if path.is_file() and str(path.relative_to(root)) not in planned:
            path.unlink()
    for group in root.iterdir():
        if group.is_dir() and not any(group.iterdir()):
            group.rmdir()
    fsync_directory(root)


def _manifest(plan: dict[str, list[list[Sample]]], records: list[ShardRecord], max_bytes: int) -> ShardsManifest:
    groups = {}
    for group, shards in plan.items():
        first = shards[0][0]
        groups[group] = {"width": first.width, "height": first.height,
                         "aspect": round(first.width / first.height, 4), "samples": sum(map(len, shards))}
    return ShardsManifest(max_bytes, sum(g["samples"] for g in groups.values()), groups, records)
