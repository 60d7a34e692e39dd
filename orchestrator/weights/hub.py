"""The Hugging Face hub as a weights source, through `huggingface_hub.snapshot_download`.

    revision (pinned or default) ──repo_info──▶ commit sha ──snapshot_download(revision=sha,
                                                              allow_patterns=id_file_mapping)──▶ dest

Resolving the revision to a commit first means every file of one download comes from the same
commit even if a branch moves meanwhile; the manifest records both. huggingface_hub resumes its own
interrupted downloads inside `dest` (its bookkeeping under `.cache/huggingface` is removed at the end)
and draws its own progress bars, one per file.
"""

from __future__ import annotations

import contextlib
import glob
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.weights.manifest import HUB_METADATA
from orchestrator.weights.sources import OFFLINE_HINT, FetchResult, SourceError, WeightsSource
from orchestrator.weights.transfer import TransferReporter, disk_full


def allow_patterns(files: tuple[str, ...] | None) -> list[str] | None:
    """id_file_mapping's file names as snapshot_download patterns, matching exactly those files.

    The names are literal (a file called `a[1].bin` means that file), so glob characters are escaped.
    """
    return None if files is None else [glob.escape(name) for name in files]


def snapshot_arguments(name: str, files: tuple[str, ...] | None, commit: str, dest: Path) -> dict[str, Any]:
    """Keyword arguments for `snapshot_download`: one repo, one commit, only the files asked for."""
    return {"repo_id": name, "revision": commit, "allow_patterns": allow_patterns(files), "local_dir": str(dest)}


class HubSource(WeightsSource):
    """Downloads from the hub named by HF_ENDPOINT (default huggingface.co), honouring HF_TOKEN and HF_HUB_OFFLINE."""

    label = "the Hugging Face hub"

    def fetch(self, name: str, files: tuple[str, ...] | None, revision: str | None, dest: Path,
              reporter: TransferReporter) -> FetchResult:
        from huggingface_hub import HfApi, constants, snapshot_download

        if constants.HF_HUB_OFFLINE:
            raise SourceError(f"cannot download {name!r} from {self.label}: HF_HUB_OFFLINE is set; {OFFLINE_HINT}")
        with _hub_errors(name, revision, constants.ENDPOINT, dest):
            commit = HfApi().repo_info(name, revision=revision).sha or revision or "main"
            snapshot_download(**snapshot_arguments(name, files, commit, dest))
        missing = [f for f in files or () if not (dest / f).is_file()]
        if missing:
            raise SourceError(f"{self.label} repo {name!r} at {commit} lacks {', '.join(missing)}, which "
                              f"id_file_mapping asks for")
        shutil.rmtree(dest / HUB_METADATA, ignore_errors=True)
        if (dest / HUB_METADATA.parent).is_dir() and not any((dest / HUB_METADATA.parent).iterdir()):
            (dest / HUB_METADATA.parent).rmdir()
        return FetchResult(f"hf://{name}", revision, commit, {})


_TRANSPORT_MODULES = {"httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3"}
"""Packages whose exceptions mean "could not talk to the hub" (huggingface_hub's HTTP stack varies by version)."""


@contextlib.contextmanager
def _hub_errors(name: str, revision: str | None, endpoint: str, dest: Path) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one line: which repo, which endpoint, how to go offline."""
    from huggingface_hub import errors

    where = f"{name!r} on {endpoint}"
    try:
        yield
    except errors.RevisionNotFoundError:
        raise SourceError(f"revision {revision!r} of {where} does not exist; fix `revisions` in the download "
                          f"config") from None
    except (errors.RepositoryNotFoundError, errors.GatedRepoError):
        raise SourceError(f"{where} does not exist or needs access: log in (`hf auth login` or HF_TOKEN) or "
                          f"request access on its page") from None
    except errors.HfHubHTTPError as exc:
        raise SourceError(f"the hub refused {where}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:
        if isinstance(exc, OSError) and (full := disk_full(exc, dest)) is not None:
            raise full from None
        if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _TRANSPORT_MODULES:
            raise SourceError(f"cannot reach the Hugging Face hub at {endpoint} for {name!r} "
                              f"({type(exc).__name__}: {exc}); {OFFLINE_HINT}") from None
        raise
