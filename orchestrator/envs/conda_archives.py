"""Conda package archives fetched once, checked against their locked sha256, and kept by that hash.

    <conda cache>/archives/<sha256>/<file name>     a complete, checked archive (renamed into place last)

rattler installs from these local copies: it does not check the hash of a file:// package itself, and
what this folder holds builds again without network.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from orchestrator.envs.channels import ChannelAccess
from orchestrator.errors import EnvBuildError

FETCH_TIMEOUT_S = 120
_CHUNK = 1 << 20


def verified_archive(env_name: str, record: dict, access: ChannelAccess, archives: Path) -> Path:
    """The package archive for `record`, fetched and checked against its sha256 unless already kept."""
    target = archives / record["sha256"] / record["fn"]
    if target.is_file():
        return target
    url = access.fetch_url(record["url"])
    if "://" not in url:  # pixi records a file:// channel's packages as plain paths
        url = Path(url).as_uri()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".fetch-")
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _download(env_name, record["name"], url, out)
        if digest != record["sha256"]:
            raise EnvBuildError(
                f"env {env_name!r}: package {record['name']!r} ({redacted(url)}) does not match the sha256 in its "
                f"lock: the channel's file changed since the lock was made; lock again "
                f"(`orchestrator envs lock {env_name}`) if the change is expected"
            )
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return target


def _download(env_name: str, package: str, url: str, out: BinaryIO) -> str:
    """Stream one archive over file://, http or https (basic auth from the URL's user:password) into `out`;
    return its sha256."""
    parts = urllib.parse.urlsplit(url)
    request = urllib.request.Request(_without_credentials(url))
    if parts.username:
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, ValueError) as exc:
        raise EnvBuildError(f"env {env_name!r}: cannot fetch package {package!r} from {redacted(url)}: {exc}; "
                            f"check the channel (or ORCHESTRATOR_CONDA_MIRRORS) and the network") from None
    return digest.hexdigest()


def _without_credentials(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if not parts.username:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def redacted(url: str) -> str:
    """`url` safe to print: any user:password replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl() if parts.username else url
