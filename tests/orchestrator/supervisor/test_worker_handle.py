"""Real workers in real envs: data round trips, every failure mode, and shutdown without orphans."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from orchestrator.errors import HandshakeTimeout, ProtocolMismatch, WorkerDied, WorkerError
from orchestrator.supervisor.policy import StopGrace, WorkerPolicy
from tests.support.envs import ensure_env, fake_env


def test_ready_info_and_big_frame_round_trip(make_handle, ocr_env) -> None:
    handle = make_handle()
    assert handle.info.env == "ocr"
    assert handle.info.executable == str(ocr_env.python)
    assert handle.info.pid == handle.pid
    assert set(handle.info.packages) >= {"numpy", "pyzmq", "msgpack"}
    frame = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    arrays = {
        "frame": frame,
        "strided": frame[::3, ::5, 1],
        "fortran": np.asfortranarray(np.arange(60_000, dtype=np.float64).reshape(300, 200)),
        "small": np.array([1.5, -2.0], dtype=np.float16),
        "bools": np.array([[True, False]]),
        "empty": np.zeros((0, 3), dtype=np.int32),
        "scalar": np.array(7, dtype=np.int64),
    }
    echoed = handle.call(arrays)
    for name, array in arrays.items():
        assert echoed[name].dtype == array.dtype and echoed[name].shape == array.shape, name
        assert np.array_equal(echoed[name], array), name


def test_worker_output_and_logging_reach_the_parent_prefixed(make_handle, caplog) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.worker")
    handle = make_handle()
    handle.close()
    lines = [record.getMessage() for record in caplog.records if record.name == "orchestrator.worker"]
    label = handle.spec.label
    assert f"[{label}] setup in 3.11" in lines
    assert f"[{label}] INFO controlled: weights loaded" in lines


def test_worker_on_another_python_round_trips(make_handle) -> None:
    env = ensure_env("content_filter")
    handle = make_handle(env=env)
    assert handle.info.python.startswith("3.12.")
    frames = np.arange(2 * 240 * 320 * 3, dtype=np.uint8).reshape(2, 240, 320, 3)
    assert np.array_equal(handle.call({"frames": frames})["frames"], frames)
    assert handle.call({"x": 1}) == {"x": 1}


def test_parent_keeps_several_batches_in_flight_and_matches_results(make_handle) -> None:
    handle = make_handle(policy=WorkerPolicy(max_in_flight=4))
    sent = {handle.submit({"i": i}): i for i in range(4)}
    with pytest.raises(RuntimeError, match="4 batches in flight"):
        handle.submit({"i": 99})
    got = {}
    for _ in range(4):
        reply = handle.receive(timeout=10)
        got[reply.request_id] = reply.payload["i"]
    assert got == sent


@pytest.mark.parametrize(
    ("fail_in", "how", "error", "message"),
    [
        ("init", "exception", WorkerError, r"\[import\] RuntimeError: controlled failure"),
        ("setup", "exception", WorkerError, r"could not set up .*\[setup\] RuntimeError: controlled failure"),
        ("setup", "exit", WorkerDied, r"exit code 7 while waiting for setup.*controlled exit"),
        ("setup", "sigkill", WorkerDied, r"killed by SIGKILL while waiting for setup"),
        ("setup", "sigsegv", WorkerDied, r"killed by SIGSEGV while waiting for setup.*Segmentation fault"),
        ("batch", "exit", WorkerDied, r"exit code 7 while waiting for a batch result.*controlled exit"),
        ("batch", "sigkill", WorkerDied, r"killed by SIGKILL while waiting for a batch result"),
        ("batch", "sigsegv", WorkerDied, r"killed by SIGSEGV while waiting for a batch result"),
    ],
)
def test_crash_matrix(make_handle, fail_in: str, how: str, error: type, message: str) -> None:
    handle = make_handle({"fail_in": fail_in, "how": how}, start=False)
    with pytest.raises(error, match="(?s)" + message) as raised:
        handle.start()
        handle.call({"x": 1}, timeout=30)
    if error is WorkerError:
        assert "controlled failure" in raised.value.remote_traceback
        assert "Traceback" in raised.value.remote_traceback


def test_batch_exception_is_reported_and_worker_survives(make_handle) -> None:
    handle = make_handle({"fail_in": "batch", "how": "exception"})
    with pytest.raises(WorkerError, match=r"batch failed: \[batch\] RuntimeError: controlled failure") as raised:
        handle.call({"x": 1}, timeout=30)
    assert "in __call__" in raised.value.remote_traceback
    assert handle.poll() is None


def test_unencodable_result_names_the_type_and_worker_survives(make_handle) -> None:
    handle = make_handle({"returns": "set"})
    with pytest.raises(WorkerError, match=r"\[result\] ProtocolError: .*'set'.*payload\['bad'\]"):
        handle.call({"x": 1}, timeout=30)
    assert handle.ping(timeout=10) > 0


@pytest.mark.parametrize(
    ("class_path", "params", "message"),
    [
        ("no_such_module.Model", {}, r"module 'no_such_module' does not import"),
        ("controlled_model.Missing", {}, r"has no attribute 'Missing'"),
        ("controlled_model.fail", {}, r"is not a subclass of models.ModelInterface"),
        ("controlled_model.ControlledModel", {"colour": "red"}, r"rejected params \['colour', 'env'\]"),
    ],
)
def test_bad_model_class_paths(make_handle, class_path: str, params: dict, message: str) -> None:
    handle = make_handle(params, class_path=class_path, start=False)
    with pytest.raises(WorkerError, match=r"\[import\] ModelLoadError: .*" + message):
        handle.start()


def test_model_from_a_file_path_outside_the_project(make_handle, tmp_path: Path) -> None:
    model_file = tmp_path / "my_model.py"
    model_file.write_text(
        "from models import ModelInterface\n"
        "class Doubler(ModelInterface):\n"
        "    def __init__(self, env): self._env = env\n"
        "    conda_env_name = property(lambda self: self._env)\n"
        "    def setup(self): pass\n"
        "    def __call__(self, batch): return {'y': batch['x'] * 2}\n"
    )
    handle = make_handle({"env": "ocr"}, class_path=f"{model_file}:Doubler")
    assert handle.call({"x": np.arange(3)})["y"].tolist() == [0, 2, 4]


def test_kill_minus_nine_mid_batch_is_detected(make_handle) -> None:
    handle = make_handle({"fail_in": "batch", "how": "hang"})
    handle.submit({"x": 1})
    os.kill(handle.pid, signal.SIGKILL)
    with pytest.raises(WorkerDied, match="killed by SIGKILL"):  # not TimeoutError: the death is seen at once
        handle.receive(timeout=2)


def test_hung_batch_past_its_deadline_is_killed_and_reported(make_handle) -> None:
    handle = make_handle({"fail_in": "batch", "how": "hang"}, policy=WorkerPolicy(request_timeout_s=1.0))
    handle.submit({"x": 1})
    with pytest.raises(WorkerDied, match=r"killed by SIGKILL because request \d+ exceeded request_timeout_s=1.0s"):
        handle.receive(timeout=30)
    assert handle.poll() == -signal.SIGKILL


def test_slow_requests_inside_their_deadline_survive_even_queued_behind_each_other(make_handle) -> None:
    policy = WorkerPolicy(request_timeout_s=2.0, max_in_flight=3, stop=StopGrace(2, 2))
    handle = make_handle({"env": "ocr", "sleep_s": 1.0}, class_path="supervised_model.Busy", policy=policy)
    pid = handle.pid
    started = time.monotonic()
    sent = [handle.submit({"i": i}) for i in range(3)]
    replies = [handle.receive(timeout=30) for _ in sent]
    # together longer than the deadline: each one's clock starts when the worker takes it up
    assert time.monotonic() - started > policy.request_timeout_s
    assert [(r.request_id, r.payload) for r in replies] == [(s, {"i": i}) for i, s in enumerate(sent)]
    assert handle.pid == pid and handle.poll() is None


def test_heartbeat_goes_through_the_main_loop(make_handle) -> None:
    handle = make_handle({"fail_in": "batch", "how": "hang"})
    assert handle.ping(timeout=10) > 0
    handle.submit({"x": 1})
    with pytest.raises(TimeoutError, match="no a heartbeat reply|heartbeat"):
        handle.ping(timeout=0.5)


def test_a_ping_keeps_results_that_arrive_before_its_heartbeat(make_handle) -> None:
    handle = make_handle()
    request_id = handle.submit({"x": 7})
    assert handle.ping(timeout=10) > 0
    reply = handle.receive(timeout=10)
    assert (reply.request_id, reply.payload) == (request_id, {"x": 7})


def test_close_escalates_and_reaps_a_busy_worker(make_handle) -> None:
    handle = make_handle({"fail_in": "batch", "how": "hang"},
                         policy=WorkerPolicy(stop=StopGrace(0.2, 5)))
    handle.submit({"x": 1})
    deadline = time.monotonic() + 30
    while "hanging" not in handle.stderr_tail() and time.monotonic() < deadline:
        time.sleep(0.01)  # polls for the worker's own signal that the batch is running
    assert handle.close() == -signal.SIGTERM  # asked, not answering, terminated


def test_idle_worker_stops_when_asked(make_handle) -> None:
    handle = make_handle()
    assert handle.close() == 0


def test_worker_that_never_becomes_ready_times_out(make_handle, tmp_path: Path) -> None:
    env = fake_env(tmp_path, "echo 'starting forever' >&2; exec sleep 600")
    handle = make_handle(env=env, policy=WorkerPolicy(ready_timeout_s=1.0, stop=StopGrace(ask_s=0.1)), start=False)
    with pytest.raises(HandshakeTimeout, match=r"(?s)no READY handshake within 1s; raise WorkerPolicy.ready_timeout_s.*"
                       r"starting forever"):
        handle.start()


def test_worker_dying_before_ready_reports_exit_and_stderr(make_handle, tmp_path: Path) -> None:
    env = fake_env(tmp_path, "echo 'ModuleNotFoundError: No module named zmq' >&2; exit 3")
    handle = make_handle(env=env, start=False)
    with pytest.raises(WorkerDied, match=r"(?s)exit code 3 while waiting for READY handshake.*No module named zmq"):
        handle.start()


V2_WORKER = """
import sys, msgpack, zmq
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
sock = zmq.Context().socket(zmq.PAIR)
sock.connect(args["--data"])
sock.send(msgpack.packb({"v": 1, "k": "ready", "id": 0, "h": {}, "p": None}))
sock.poll(10000)
"""


def test_peer_speaking_another_protocol_version_is_refused(make_handle, tmp_path: Path) -> None:
    (tmp_path / "v2_worker.py").write_text(V2_WORKER)
    env = fake_env(tmp_path, f'shift 2; exec {sys.executable} {tmp_path / "v2_worker.py"} "$@"')
    handle = make_handle(env=env, start=False)
    with pytest.raises(ProtocolMismatch, match="peer speaks protocol version 1, this side speaks 2"):
        handle.start()


def test_seed_style_transformers_model_runs_in_its_env(make_handle, tmp_path: Path, parent_imports) -> None:
    env = ensure_env("video_splitting")
    weights = tmp_path / "weights"
    subprocess.run([str(env.python), "-c",
                    ("import sys; from transformers import BertConfig, BertModel; "
                    "BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,"
                    " intermediate_size=32)).save_pretrained(sys.argv[1])"),
                    str(weights / "test-org" / "tiny-bert")], check=True, capture_output=True)
    handle = make_handle(env=env, class_path="seed_embedder.TinyBertEmbedder",
                         extra_environ={"ORCHESTRATOR_WEIGHTS_DIR": str(weights)})
    out = handle.call({"input_ids": np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.int64)}, timeout=120)
    assert out["embeddings"].shape == (2, 16) and out["embeddings"].dtype == np.float32
    assert parent_imports() == []
