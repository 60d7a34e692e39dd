"""Real uv builds of a small env: once, concurrently, after a kill, on a second root, and gc."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from orchestrator.envs import EnvRegistry
from orchestrator.envs.cache import MARKER, lease
from orchestrator.errors import EnvBuildError
from orchestrator.settings import Settings
from tests.support.env_settings import cli_env
from tests.support.paths import ORCHESTRATOR

FREEZE = "import importlib.metadata as m; print(sorted((d.metadata['Name'], d.version) for d in m.distributions()))"


def freeze(python: Path) -> str:
    return subprocess.run([str(python), "-c", FREEZE], capture_output=True, text=True, check=True).stdout


def test_second_build_is_a_no_op(tiny_settings: Settings) -> None:
    registry = EnvRegistry(tiny_settings)
    env = registry.ensure("tiny")
    marker = env.prefix / MARKER
    first_stat = marker.stat()
    again = registry.ensure("tiny")
    assert again == env
    assert marker.stat().st_mtime_ns == first_stat.st_mtime_ns
    subprocess.run([str(env.python), "-c", "import six, zmq, msgpack, numpy"], check=True)
    assert registry.status("tiny").built


def test_concurrent_builds_make_one_intact_env(tiny_settings: Settings) -> None:
    argv = [*ORCHESTRATOR, "envs", "build", "tiny"]
    procs = [subprocess.Popen(argv, env=cli_env(tiny_settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for _ in range(3)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    entries = [p for p in tiny_settings.env_cache_dir.iterdir() if p.is_dir()]
    assert len(entries) == 1, entries
    python = EnvRegistry(tiny_settings).ensure("tiny").python
    subprocess.run([str(python), "-c", "import six, zmq, msgpack, numpy"], check=True)


def test_build_killed_midway_is_recovered(tiny_settings: Settings) -> None:
    """The build is killed at a known point: `uv pip sync` asking a package index (a socket this test holds,
    never answered) for the first package, after `uv venv` has made the `.partial` folder."""
    with socket.create_server(("127.0.0.1", 0)) as index:
        index.settimeout(120)  # a safety net only: the build connects within a second or two
        environ = {**cli_env(tiny_settings), "UV_NO_CACHE": "1",
                   "UV_DEFAULT_INDEX": f"http://127.0.0.1:{index.getsockname()[1]}/simple"}
        proc = subprocess.Popen([*ORCHESTRATOR, "envs", "build", "tiny"], env=environ, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            connection, _ = index.accept()
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the build and the uv it runs, as a crash or the OOM killer would
            proc.wait()
        connection.close()
    assert [p.name for p in tiny_settings.env_cache_dir.glob("tiny-*.partial")], "the build left no .partial folder"
    registry = EnvRegistry(tiny_settings)
    assert not registry.status("tiny").built
    env = registry.ensure("tiny")
    subprocess.run([str(env.python), "-c", "import six, zmq, msgpack, numpy"], check=True)
    assert not list(tiny_settings.env_cache_dir.glob("*.partial"))


def test_same_lock_on_second_cache_root_gives_same_packages(tiny_settings: Settings, tmp_path: Path) -> None:
    first = EnvRegistry(tiny_settings).ensure("tiny")
    other = Settings(envs_dir=tiny_settings.envs_dir, env_cache_dir=tmp_path / "other-cache",
                     find_links=tiny_settings.find_links)
    second = EnvRegistry(other).ensure("tiny")
    assert first.prefix != second.prefix
    assert freeze(first.python) == freeze(second.python)


def test_failed_build_shows_installer_output_and_leaves_nothing(tiny_settings: Settings) -> None:
    lock = tiny_settings.envs_dir / "tiny" / "requirements.lock"
    six_block = re.compile(r"(six==1\.17\.0 \\\n(?:\s+--hash=sha256:[0-9a-f]+ ?\\?\n)+)")
    lock.write_text(six_block.sub(lambda m: re.sub("[0-9a-f]{64}", "ab" * 32, m.group(1)), lock.read_text()))
    with pytest.raises(EnvBuildError, match=r"building env 'tiny' failed \(exit \d+\); last lines:\n.*six"):
        EnvRegistry(tiny_settings).ensure("tiny")
    assert list(tiny_settings.env_cache_dir.glob("tiny-*/")) == []


def test_gc_removes_stale_entries_but_not_current_or_in_use(tiny_settings: Settings) -> None:
    registry = EnvRegistry(tiny_settings)
    current = registry.ensure("tiny").prefix
    stale_unused = tiny_settings.env_cache_dir / "tiny-0000000000000000"
    stale_in_use = tiny_settings.env_cache_dir / "tiny-1111111111111111"
    for stale in (stale_unused, stale_in_use):
        stale.mkdir()
    with lease(stale_in_use):
        removed = registry.gc()
    assert removed == [stale_unused]
    assert current.is_dir() and stale_in_use.is_dir()
    assert registry.gc() == [stale_in_use]


def test_gc_in_another_process_skips_envs_a_run_has_leased(tiny_settings: Settings) -> None:
    """`orchestrator run` leases its envs for the whole run; a `gc` meanwhile must not delete one, even once a
    changed lock has made it stale (a worker restarting later would find its interpreter gone)."""
    registry = EnvRegistry(tiny_settings)
    env = registry.ensure("tiny")
    lock = tiny_settings.envs_dir / "tiny" / "requirements.lock"
    lock.write_text(lock.read_text() + "# edited: the built env is stale from now on\n")
    gc = [*ORCHESTRATOR, "envs", "gc"]
    environ = {**cli_env(tiny_settings), "COLUMNS": "500"}  # one line per removed path
    with registry.leased([env]):
        during = subprocess.run(gc, env=environ, capture_output=True, text=True, check=True)
        assert "0 cache entries removed" in during.stdout and env.prefix.is_dir()
        subprocess.run([str(env.python), "-c", "import six"], check=True)
    after = subprocess.run(gc, env=environ, capture_output=True, text=True, check=True)
    assert f"removed {env.prefix}" in after.stdout and not env.prefix.exists()


def test_a_lease_on_an_env_gc_already_removed_says_so(tiny_settings: Settings) -> None:
    registry = EnvRegistry(tiny_settings)
    env = registry.ensure("tiny")
    shutil.rmtree(env.prefix)
    with pytest.raises(EnvBuildError, match=r"env 'tiny' at .* was removed .*orchestrator envs gc"):
        registry.leased([env])


def test_cli_list_python_and_check(tiny_settings: Settings) -> None:
    env = cli_env(tiny_settings)
    python = subprocess.run([*ORCHESTRATOR, "envs", "python", "tiny"], env=env, capture_output=True, text=True,
                            check=True).stdout.strip()
    import json

    listed = json.loads(subprocess.run([*ORCHESTRATOR, "envs", "list", "--json"], env=env, capture_output=True,
                                       text=True, check=True).stdout)
    assert [(r["name"], r["backend"], r["built"], r["python"]) for r in listed] == [("tiny", "uv", True, "3.11")]
    assert python == str(Path(listed[0]["path"]) / "bin" / "python")
    spec = tiny_settings.envs_dir / "tiny" / "environment.yml"
    spec.write_text(spec.read_text() + "      - idna\n")
    checked = subprocess.run([*ORCHESTRATOR, "envs", "check"], env=env, capture_output=True, text=True)
    assert checked.returncode == 2
    assert "env 'tiny'" in checked.stderr and "orchestrator envs lock tiny" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_cli_unknown_env_is_one_line(tiny_settings: Settings) -> None:
    result = subprocess.run([*ORCHESTRATOR, "envs", "python", "nope"], env=cli_env(tiny_settings),
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown env 'nope'" in result.stderr and "known envs: tiny" in result.stderr
    assert "Traceback" not in result.stderr
