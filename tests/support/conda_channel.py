"""A local conda channel built from what this machine has: pyenv's CPython, an FFmpeg wheel, tiny noarch packages.

    pyenv prefix ──patchelf (RPATH $ORIGIN/../lib)──▶ python-3.12.1-0.conda ─┐
    imageio-ffmpeg's bundled ffmpeg + activate.d/orch-ffmpeg.sh ─▶ ffmpeg ──┼──▶ <channel>/{linux-64,noarch}
    orchpkg 1.0 and 2.0 (noarch: python) ───────────────────────────────────┤        + rattler's repodata.json
    python and ffmpeg for osx-arm64, metadata only (to lock, not install) ──┘

Packages are written in the `.conda` format (a stored zip of two zstd tars) at a low zstd level: this
builds in seconds, where bz2 would spend a minute on the interpreter and the 170 MB FFmpeg binary.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from rattler.index import index_fs

PLATFORM = "linux-64"
FOREIGN_PLATFORM = "osx-arm64"
"""Another platform the channel has (metadata-only) python and ffmpeg for, so a lock can cover two."""
TIMESTAMP = 1_700_000_000_000
ACTIVATION_VARIABLE = "ORCH_FFMPEG_HOME"
_PYTHON_SKIPPED = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "__pycache__",
                   "site-packages", "pydoc_data"}


@dataclass
class Package:
    """One package to write: metadata plus files (path in the prefix -> bytes, or a symlink target)."""

    name: str
    version: str
    subdir: str
    depends: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    executable: set[str] = field(default_factory=set)
    placeholder: str | None = None
    """A path baked into text files, replaced by the install prefix (conda's prefix replacement)."""

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-0"


def _tar_zst(members: Iterable[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return zstandard.ZstdCompressor(level=1, threads=-1).compress(raw.getvalue())


def _file_member(path: str, data: bytes, executable: bool) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(path)
    info.size, info.mode = len(data), 0o755 if executable else 0o644
    return info, data


def _paths_json(package: Package) -> dict:
    entries = []
    for path, data in sorted(package.files.items()):
        entry = {"_path": path, "path_type": "hardlink", "sha256": hashlib.sha256(data).hexdigest(),
                 "size_in_bytes": len(data)}
        if package.placeholder and package.placeholder.encode() in data and b"\0" not in data:
            entry |= {"prefix_placeholder": package.placeholder, "file_mode": "text"}
        entries.append(entry)
    entries += [{"_path": path, "path_type": "softlink"} for path in sorted(package.links)]
    return {"paths": sorted(entries, key=lambda e: e["_path"]), "paths_version": 1}


def _info_members(package: Package) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    index = {"name": package.name, "version": package.version, "build": "0", "build_number": 0,
             "depends": package.depends, "subdir": package.subdir, "timestamp": TIMESTAMP, "license": "test-only"}
    if package.subdir == "noarch":
        index["noarch"] = "python"
    else:
        family, arch = package.subdir.split("-")
        index |= {"platform": family, "arch": {"64": "x86_64"}.get(arch, arch)}
    paths = _paths_json(package)
    has_prefix = "".join(f"{package.placeholder} text {e['_path']}\n" for e in paths["paths"]
                         if "prefix_placeholder" in e)
    info = {"info/index.json": index, "info/paths.json": paths}
    for path, value in info.items():
        yield _file_member(path, json.dumps(value, indent=2, sort_keys=True).encode(), False)
    yield _file_member("info/files", "".join(f"{e['_path']}\n" for e in paths["paths"]).encode(), False)
    if has_prefix:
        yield _file_member("info/has_prefix", has_prefix.encode(), False)


def _pkg_members(package: Package) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    for path, data in sorted(package.files.items()):
        yield _file_member(path, data, path in package.executable)
    for path, target in sorted(package.links.items()):
        info = tarfile.TarInfo(path)
        info.type, info.linkname = tarfile.SYMTYPE, target
        yield info, None


def write_package(package: Package, channel: Path) -> Path:
    """Write `package` as `<channel>/<subdir>/<stem>.conda`."""
    target = channel / package.subdir / f"{package.stem}.conda"
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        members = {"metadata.json": json.dumps({"conda_pkg_format_version": 2}).encode(),
                   f"pkg-{package.stem}.tar.zst": _tar_zst(_pkg_members(package)),
                   f"info-{package.stem}.tar.zst": _tar_zst(_info_members(package))}
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return target


def python_package(pyenv_prefix: Path, version: str) -> Package:
    """CPython from a pyenv prefix, trimmed to what runs a worker, its libpython found relative to itself."""
    minor = ".".join(version.split(".")[:2])
    package = Package("python", version, PLATFORM, placeholder=str(pyenv_prefix))
    binary = f"bin/python{minor}"
    for source in _python_files(pyenv_prefix, minor):
        relative = source.relative_to(pyenv_prefix).as_posix()
        if source.is_symlink():
            package.links[relative] = os.readlink(source)
        else:
            package.files[relative] = source.read_bytes()
            if os.access(source, os.X_OK):
                package.executable.add(relative)
    package.files[binary] = _relative_rpath(pyenv_prefix / binary)
    package.executable.add(binary)
    package.files[f"lib/python{minor}/site-packages/README.txt"] = b"site-packages of a conda env\n"
    package.links |= {"bin/python": f"python{minor}", "bin/python3": f"python{minor}"}
    return package


def _python_files(prefix: Path, minor: str) -> Iterator[Path]:
    yield from (p for p in (prefix / "lib").glob("libpython*") if p.is_file() or p.is_symlink())
    stdlib = prefix / "lib" / f"python{minor}"
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in _PYTHON_SKIPPED and not d.startswith("config-")]
        yield from (Path(root) / name for name in files)


def _relative_rpath(binary: Path) -> bytes:
    """The interpreter with its RPATH pointing into its own prefix, wherever that prefix is installed."""
    patchelf = Path(sys.executable).parent / "patchelf"
    with_rpath = binary.read_bytes()
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"orch-patchelf-{os.getpid()}"
    scratch.write_bytes(with_rpath)
    try:
        subprocess.run([str(patchelf), "--set-rpath", "$ORIGIN/../lib", str(scratch)], check=True)
        return scratch.read_bytes()
    finally:
        scratch.unlink()


def ffmpeg_package() -> Package:
    """imageio-ffmpeg's static FFmpeg build as `bin/ffmpeg`, with an activate.d script exporting a variable."""
    import imageio_ffmpeg

    binary = Path(imageio_ffmpeg.get_ffmpeg_exe())
    script = f'export {ACTIVATION_VARIABLE}="$CONDA_PREFIX/share/ffmpeg"\n'
    package = Package("ffmpeg", "9.0.2", PLATFORM)
    package.files = {"bin/ffmpeg": binary.read_bytes(), "etc/conda/activate.d/orch-ffmpeg.sh": script.encode(),
                     "share/ffmpeg/README": b"FFmpeg from imageio-ffmpeg\n"}
    package.executable = {"bin/ffmpeg"}
    return package


def noarch_package(name: str, version: str) -> Package:
    source = f'__version__ = "{version}"\n'.encode()
    return Package(name, version, "noarch", depends=["python"], files={f"site-packages/{name}/__init__.py": source})


def build_channel(channel: Path, pyenv_prefix: Path, python_version: str) -> Path:
    """Write every test package under `channel` and index it with rattler's indexer."""
    shutil.rmtree(channel, ignore_errors=True)
    (channel / "noarch").mkdir(parents=True)
    foreign = [Package(name, version, FOREIGN_PLATFORM) for name, version in
               (("python", python_version), ("ffmpeg", "9.0.2"))]
    for package in (python_package(pyenv_prefix, python_version), ffmpeg_package(),
                    noarch_package("orchpkg", "1.0"), noarch_package("orchpkg", "2.0"), *foreign):
        write_package(package, channel)
    asyncio.run(index_fs(channel, write_zst=False, write_shards=False))
    return channel


def tiny_wheel(folder: Path, name: str, version: str, extra: str = "") -> Path:
    """A pure-Python wheel holding one module `<name>` with `__version__` and `extra` lines (a PyPI package
    for pixi locks)."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f'__version__ = "{version}"\n{extra}'.encode(),
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},sha256={_urlsafe_sha256(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    target = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w") as wheel:
        for path, data in files.items():
            wheel.writestr(zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return target


def _urlsafe_sha256(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
