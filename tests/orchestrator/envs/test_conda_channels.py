"""Channels on sites that are not a plain public channel: credentials from the environment, mirrors."""

from __future__ import annotations

import base64
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from orchestrator.envs import EnvRegistry
from orchestrator.errors import EnvSpecError, LockError
from orchestrator.settings import Settings
from tests.support.env_settings import conda_settings, lock, write_env

USER, PASSWORD = "curator", "s3cret-pass"


@pytest.fixture
def auth_channel(conda_channel: Path) -> Iterator[tuple[int, list[str]]]:
    """The local channel over http behind basic auth; yields the port and the paths served."""
    served: list[str] = []
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class BasicAuth(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="channel"')
                self.end_headers()
                return
            served.append(self.path)
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(BasicAuth, directory=str(conda_channel)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], served
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


def test_credentials_come_from_the_environment_and_never_reach_the_lock(
        auth_channel: tuple[int, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port, served = auth_channel
    settings = conda_settings(tmp_path)
    channel = f"http://${{ORCH_CHANNEL_USER}}:${{ORCH_CHANNEL_PASSWORD}}@127.0.0.1:{port}"
    write_env(settings.envs_dir, "orch_one", channel, "1.0")
    monkeypatch.delenv("ORCH_CHANNEL_USER", raising=False)
    with pytest.raises(EnvSpecError, match=r"env 'orch_one': channel .* needs \$\{ORCH_CHANNEL_USER\}; set it"):
        lock(settings, "orch_one")
    monkeypatch.setenv("ORCH_CHANNEL_USER", USER)
    monkeypatch.setenv("ORCH_CHANNEL_PASSWORD", PASSWORD)
    lock(settings, "orch_one")
    text = (settings.envs_dir / "orch_one" / "conda-lock.yml").read_text()
    assert PASSWORD not in text and USER not in text
    document = yaml.safe_load(text)
    assert document["metadata"]["channels"] == [{"url": channel, "used_env_vars": ["ORCH_CHANNEL_USER",
                                                                                    "ORCH_CHANNEL_PASSWORD"]}]
    assert all(p["url"].startswith(channel + "/") for p in document["package"])
    env = EnvRegistry(settings).ensure("orch_one")
    assert (env.prefix / "lib" / "python3.12" / "site-packages" / "orchpkg").is_dir()
    assert "/noarch/orchpkg-1.0-0.conda" in served
    write_env(settings.envs_dir, "orch_one", channel, "9.9")
    with pytest.raises(LockError, match=r"env 'orch_one': cannot solve") as unsolvable:
        lock(settings, "orch_one")
    assert PASSWORD not in str(unsolvable.value) and "orchpkg" in str(unsolvable.value)


def test_a_mirror_serves_a_channel_whose_canonical_url_is_unreachable(conda_channel: Path, tmp_path: Path) -> None:
    canonical = "https://conda.invalid/orch-test"
    base = conda_settings(tmp_path)
    settings = Settings(envs_dir=base.envs_dir, env_cache_dir=base.env_cache_dir, conda_cache=base.conda_cache,
                        find_links=base.find_links, conda_mirrors=((canonical, conda_channel.as_uri()),))
    write_env(settings.envs_dir, "orch_one", canonical, "1.0")
    lock(settings, "orch_one")
    document = yaml.safe_load((settings.envs_dir / "orch_one" / "conda-lock.yml").read_text())
    assert {p["name"]: p["url"] for p in document["package"]}["orchpkg"] == f"{canonical}/noarch/orchpkg-1.0-0.conda"
    env = EnvRegistry(settings).ensure("orch_one")
    assert (env.prefix / "bin" / "ffmpeg").is_file()
