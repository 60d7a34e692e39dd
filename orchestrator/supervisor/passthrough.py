"""Which of the parent's environment variables reach a worker.

Everything does (PATH, HOME, locale, TMPDIR, proxies, CUDA_* and NVIDIA_*, OMP_NUM_THREADS, HF_HOME,
HF_HUB_OFFLINE, ORCHESTRATOR_WEIGHTS_DIR, a model's own settings, ...), except:

- dynamic-loader injection, never: LD_PRELOAD, LD_AUDIT and every other LD_* variable but
  LD_LIBRARY_PATH (GPU stacks need it), and DYLD_*. Not even when named below: a library that must be
  preloaded belongs in the env's own activation, which is applied after this filter.
- credentials, unless asked for: AWS_* and AZURE_* (their SDKs read keys, profiles and connection
  strings from many names), SSH_AUTH_SOCK, KRB5CCNAME, and any name holding SECRET, PASSWORD, PASSWD,
  CREDENTIAL, APIKEY, API_KEY, ACCESS_KEY or PRIVATE_KEY, or the word TOKEN (HF_TOKEN, GITHUB_TOKEN,
  GOOGLE_APPLICATION_CREDENTIALS, OPENAI_API_KEY, PGPASSWORD; not TOKENIZERS_PARALLELISM). A worker
  reads its weights from the local cache, so by default it needs none of them. Names a model declares
  pass, and so do those the user lists in ORCHESTRATOR_WORKER_PASS_ENV (names or shell-style patterns,
  separated by spaces or commas: `ORCHESTRATOR_WORKER_PASS_ENV="HF_TOKEN AWS_*"`).

The parent's interpreter settings (PYTHONPATH, PYTHONHOME, VIRTUAL_ENV, CONDA_PREFIX, ...) are dropped
by `Env.launch_environ`, and the launcher sets the import path and GPU variables itself.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping

PASS_ENV_VAR = "ORCHESTRATOR_WORKER_PASS_ENV"

_LOADER_KEPT = "LD_LIBRARY_PATH"
_CREDENTIAL_FAMILIES = ("AWS_", "AZURE_")
_CREDENTIAL_NAMES = {"SSH_AUTH_SOCK", "KRB5CCNAME"}
_CREDENTIAL_PARTS = ("SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "APIKEY", "API_KEY", "ACCESS_KEY", "PRIVATE_KEY")
_TOKEN_WORD = re.compile(r"(?:^|_)TOKEN(?:_|$)")


def is_loader_injection(name: str) -> bool:
    """A variable that makes the dynamic loader run foreign code in every process it starts."""
    return (name.startswith("LD_") and name != _LOADER_KEPT) or name.startswith("DYLD_")


def is_credential(name: str) -> bool:
    """A variable that carries or selects a secret."""
    upper = name.upper()
    return (upper.startswith(_CREDENTIAL_FAMILIES) or upper in _CREDENTIAL_NAMES
            or any(part in upper for part in _CREDENTIAL_PARTS) or bool(_TOKEN_WORD.search(upper)))


def passed_environ(base: Mapping[str, str], declared: Iterable[str] = ()) -> dict[str, str]:
    """The variables of `base` a worker may see; `declared`: names its model says it needs."""
    asked = [*declared, *re.split(r"[\s,]+", base.get(PASS_ENV_VAR, "").strip())]
    return {name: value for name, value in base.items()
            if not is_loader_injection(name)
            and (not is_credential(name) or any(pattern and fnmatch.fnmatchcase(name, pattern) for pattern in asked))}
