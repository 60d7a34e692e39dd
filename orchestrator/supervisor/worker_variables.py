"""Which of the parent's environment variables reach a worker: those it needs, and those asked for.

A worker gets only the variables named in `WORKER_VARIABLES` (the process's basics, locale, temporary
folders, device selection, thread settings, caches and offline switches) and the proxy settings, a proxy
only while its URL carries no password. A credential the parent holds (DATABASE_URL, KAGGLE_KEY, HF_TOKEN,
AWS_*, a password in a proxy URL, ...) stays with the parent, since a worker reads its weights from the local
cache and needs none by default. The user adds what a model needs with ORCHESTRATOR_WORKER_PASS_ENV (names or
shell-style patterns, separated by spaces or commas: `ORCHESTRATOR_WORKER_PASS_ENV="HF_TOKEN AWS_*"`).

Media workers (the orchestrator's own code, which reads videos from object storage) also get the object
store's settings and credentials, `STORAGE_VARIABLES` (`storage_environ`); model workers never do.

Dynamic-loader injection never passes, not even when asked for: LD_PRELOAD, LD_AUDIT and every other LD_*
variable but LD_LIBRARY_PATH (GPU stacks need it), and DYLD_*. A library that must be preloaded belongs in the
env's own activation, which `Env.launch_environ` applies after this filter, together with the env's own
variables; the launcher then sets the import path, the GPU share and the socket keys itself.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

PASS_ENV_VAR = "ORCHESTRATOR_WORKER_PASS_ENV"

WORKER_VARIABLES = (
    # the process's basics
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "TEMP", "TMP",
    "TERM", "COLORTERM", "NO_COLOR",
    # what the loader and TLS look for
    "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    # device selection and thread settings
    "CUDA_*", "NVIDIA_*", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF",
    "OMP_*", "MKL_*", "KMP_*", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS",
    "VECLIB_MAXIMUM_THREADS", "TOKENIZERS_PARALLELISM",
    # the interpreter's harmless settings (the launcher sets the import path itself)
    "PYTHONHASHSEED", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONDONTWRITEBYTECODE", "PYTHONWARNINGS",
    # caches and offline switches
    "XDG_CACHE_HOME", "ORCHESTRATOR_WEIGHTS_DIR", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
    "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE",
    "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_PROGRESS_BARS", "TORCH_HOME",
)  # fmt: skip
"""Names and shell-style patterns of the variables every worker gets from the parent."""

STORAGE_VARIABLES = ("AWS_*",)
"""What boto3's standard chain reads (credentials, profile, region, endpoint): for media workers only."""

PROXY_VARIABLES = frozenset(
    name for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") for name in (base, base.upper())
)
"""Passed while they carry no password (`http://user:secret@proxy:3128` stays with the parent)."""

_LOADER_KEPT = "LD_LIBRARY_PATH"


def is_loader_injection(name: str) -> bool:
    """A variable that makes the dynamic loader run foreign code in every process it starts."""
    return (name.startswith("LD_") and name != _LOADER_KEPT) or name.startswith("DYLD_")


def is_needed(name: str, value: str) -> bool:
    """Whether every worker gets this variable without being asked."""
    if name in PROXY_VARIABLES:
        return not _has_password(value)
    return _matches(name, WORKER_VARIABLES)


def asked_for(base: Mapping[str, str]) -> tuple[str, ...]:
    """The names and patterns the user lists in ORCHESTRATOR_WORKER_PASS_ENV."""
    listed = re.split(r"[\s,]+", base.get(PASS_ENV_VAR, "").strip())
    return tuple(pattern for pattern in listed if pattern)


def passed_environ(base: Mapping[str, str]) -> dict[str, str]:
    """The variables of `base` a worker may see."""
    asked = asked_for(base)
    return {name: value for name, value in base.items()
            if not is_loader_injection(name) and (is_needed(name, value) or _matches(name, asked))}


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _has_password(value: str) -> bool:
    """A proxy URL with a password in it, or one too garbled to tell (then it is kept back, to be safe)."""
    if "@" not in value:
        return False
    try:
        return any(urlsplit(part if "://" in part else f"//{part}").password is not None
                   for part in value.split(","))
    except ValueError:
        return True


def storage_environ(base: Mapping[str, str]) -> dict[str, str]:
    """The object store's variables of `base`, for a media worker (never a model's)."""
    return {name: value for name, value in base.items() if _matches(name, STORAGE_VARIABLES)}
