"""The worker program: handshake, load one model, serve batches until told to stop.

    parent ──data (PAIR)──▶ READY ◀ DESCRIBE ▶ RESULT ◀ SETUP ▶ RESULT/ERROR ◀ BATCH ▶ RESULT/ERROR
                            ◀ HEARTBEAT ▶ HEARTBEAT   (through the main loop: a round trip behind queued batches)
    parent ──control (PAIR)─▶ shutdown (raw bytes: anything but a HEARTBEAT message stops the worker)
                            ◀ HEARTBEAT ▶ HEARTBEAT   (answered by the control thread, also while the model runs)

The control socket is read by its own thread, so a stop never waits behind queued batches, and the parent
can tell a worker whose model is busy (the thread answers) from one that is frozen (nothing answers).

Every failure becomes an ERROR message with the worker's traceback, naming the request it answers whenever
that request's id can be read; an unexpected crash of the loop sends a last DEAD message before exiting.
Nothing here imports the model's packages until DESCRIBE or SETUP.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib.metadata
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import zmq

from models.conda_utils import current_env_name
from models.model_interface import ModelInterface
from workers.calls import Outcome, call_items, error_header
from workers.curve import apply_client_keys
from workers.describe import describe, missing_module
from workers.gpu import apply_memory_cap
from workers.headers import WorkerInfo
from workers.model_input import InputSpec, adapt_input, resolve_input, with_input_hint
from workers.model_loader import ModelLoadError, instantiate
from workers.protocol import Decoder, Encoder, Kind, Message, ProtocolError, peek_request_id
from workers.shared_frames import SharedFramesDir
from workers.shm_ring import ShmRingReader
from workers.threads import apply_thread_budget, budget_from_environ

REPORTED_PACKAGES = ("numpy", "pyzmq", "msgpack", "torch", "transformers", "onnxruntime")
IDLE_POLL_MS = 200
DEAD_LINGER_MS = 1000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--data", required=True, help="zmq endpoint for requests and replies")
    parser.add_argument("--control", required=True, help="zmq endpoint for shutdown requests")
    parser.add_argument("--name", default="worker", help="label used in logs")
    parser.add_argument("--ring", help="shared-memory ring name (same host only)")
    parser.add_argument("--frames-dir", help="the run's frames folder, whose segments requests may name")
    parser.add_argument("--ring-slots", type=int, default=0)
    parser.add_argument("--ring-slot-bytes", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=0,
                        help="the process that started this worker: its death makes the worker exit")
    parser.add_argument("--max-message-bytes", type=int, default=1024**3,
                        help="largest message either side accepts; bigger results are answered with an error")
    return parser.parse_args(argv)


def ready_header(name: str) -> dict[str, Any]:
    """What the parent logs and checks: who and where this worker is."""
    packages = {}
    for dist in REPORTED_PACKAGES:
        try:
            packages[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return WorkerInfo(os.getpid(), name, current_env_name() or "", sys.executable,
                      ".".join(map(str, sys.version_info[:3])), packages,
                      os.environ.get("CUDA_VISIBLE_DEVICES", "")).to_header()


class Worker:
    """One model served over one data socket; single-threaded apart from the control listener."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.name = args.name
        self.context = zmq.Context()
        self.data = self.context.socket(zmq.PAIR)
        self.max_message_bytes = args.max_message_bytes
        self.data.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        apply_client_keys(self.data)
        self.data.connect(args.data)
        self.stop = threading.Event()
        ring = ShmRingReader.attach(args.ring, args.ring_slots, args.ring_slot_bytes) if args.ring else None
        frames_dir = SharedFramesDir(Path(args.frames_dir)) if args.frames_dir else None
        self.decoder = Decoder(ring=ring, frames_dir=frames_dir)
        self.encoder = Encoder()
        self.model: ModelInterface | None = None
        self.input = InputSpec()
        self.described: tuple[str, ModelInterface] | None = None
        """The model DESCRIBE built, kept so SETUP of the same class goes on with it."""
        # Given by the parent, not read here: a parent that died while this interpreter imported would
        # otherwise be taken for init, and the orphan would never notice.
        self.parent_pid = args.parent_pid or os.getppid()
        self.control_thread = threading.Thread(target=self._listen_control, args=(args.control,), daemon=True)

    def send(self, msg: Message) -> None:
        frames, _ = self.encoder.encode(msg)
        size = sum(len(memoryview(frame)) for frame in frames)
        if size > self.max_message_bytes:
            raise ProtocolError(f"the reply is {size} bytes, over the limit of {self.max_message_bytes} "
                                f"(WorkerPolicy.max_message_bytes); return less per item or raise the limit")
        self.data.send_multipart(frames, copy=False)

    def reply(self, request: Message, kind: Kind, payload: Any = None, header: dict[str, Any] | None = None) -> None:
        try:
            self.send(Message(kind, request.request_id, header or {}, payload))
        except ProtocolError as exc:
            self.send(Message(Kind.ERROR, request.request_id, error_header("result", exc)))

    def run(self) -> None:
        self.control_thread.start()
        self.send(Message(Kind.READY, 0, ready_header(self.name)))
        while not self.stop.is_set():
            try:
                frames = self.data.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.data.poll(IDLE_POLL_MS)
                continue
            try:
                msg = self.decoder.decode(frames)
            except ProtocolError as exc:
                self.send(Message(Kind.ERROR, peek_request_id(frames[0].buffer) or 0, error_header("protocol", exc)))
                continue
            self.handle(msg)

    def handle(self, msg: Message) -> None:
        if msg.kind is Kind.DESCRIBE:
            self.describe(msg)
        elif msg.kind is Kind.SETUP:
            self.setup(msg)
        elif msg.kind is Kind.BATCH:
            self.run_batch(msg)
        elif msg.kind is Kind.HEARTBEAT:
            self.reply(msg, Kind.HEARTBEAT)
        else:
            self.send(Message(Kind.ERROR, msg.request_id, error_header(
                "protocol", ProtocolError(f"a worker does not accept {msg.kind.value!r} messages"))))

    def describe(self, msg: Message) -> None:
        try:
            model = instantiate(msg.header["class_path"], msg.payload or {})
            declarations = describe(model)
        except Exception as exc:  # the module, its imports or its constructor raised: reported with its traceback
            self.reply(msg, Kind.ERROR, header={**error_header("import", exc), "missing_module": missing_module(exc)})
            return
        self.described = (msg.header["class_path"], model)
        self.reply(msg, Kind.RESULT, declarations)

    def setup(self, msg: Message) -> None:
        stage = "import"
        try:
            if self.described is not None and self.described[0] == msg.header["class_path"]:
                model = self.described[1]
            else:
                model = instantiate(msg.header["class_path"], msg.payload or {})
            self.described = None
            self.input = resolve_input(msg.header.get("input"), model)
            stage = "setup"
            apply_thread_budget(budget_from_environ())
            apply_memory_cap()
            model.setup()
        except ModelLoadError as exc:
            self.reply(msg, Kind.ERROR, header=error_header("import", exc))
            return
        except Exception as exc:  # a model's own failure, reported with its traceback
            self.reply(msg, Kind.ERROR, header=error_header(stage, exc))
            return
        self.model = model
        self.reply(msg, Kind.RESULT, header={"model": type(model).__name__})

    def run_batch(self, msg: Message) -> None:
        if self.model is None:
            self.reply(msg, Kind.ERROR, header=error_header("batch", RuntimeError("batch before setup")))
            return
        if msg.header.get("items"):
            outcomes = self.call(msg.payload)
            failed = [[index, error] for index, (_, error) in enumerate(outcomes) if error is not None]
            self.reply(msg, Kind.RESULT, [result for result, _ in outcomes], {"failed": failed})
            return
        result, error = self.call([msg.payload])[0]
        if error is not None:
            self.reply(msg, Kind.ERROR, header=error)
        else:
            self.reply(msg, Kind.RESULT, result)

    def call(self, payloads: list[Any]) -> list[Outcome]:
        """Each payload shaped as the stage's `input:` says, then the model on them; one outcome each, so a
        request carrying several items (a stage's batch_size) fails item by item."""
        outcomes: list[Outcome | None] = []
        inputs = []
        for payload in payloads:
            try:
                inputs.append(adapt_input(payload, self.input))
                outcomes.append(None)
            except Exception as exc:  # a payload the input settings cannot shape fails alone
                outcomes.append((None, error_header("input", exc)))
        called = iter(call_items(self.model, inputs, self.model.batched))  # type: ignore[arg-type]
        return [outcome if outcome is not None else with_input_hint(next(called), self.input) for outcome in outcomes]

    def _listen_control(self, endpoint: str) -> None:
        control = self.context.socket(zmq.PAIR)
        apply_client_keys(control)
        control.connect(endpoint)
        decoder, encoder = Decoder(), Encoder()
        try:
            while not self.stop.is_set():
                if control.poll(IDLE_POLL_MS):
                    self._answer_control(control, decoder, encoder)
                elif os.getppid() != self.parent_pid:
                    os._exit(3)  # orphaned: the parent died without stopping us
        finally:
            control.close(linger=0)

    def _answer_control(self, control: zmq.Socket, decoder: Decoder, encoder: Encoder) -> None:
        """A HEARTBEAT is answered at once, whatever the model is doing; anything else asks the worker to stop."""
        frames = control.recv_multipart(copy=False)
        try:
            msg = decoder.decode(frames)
        except ProtocolError:
            msg = None
        if msg is not None and msg.kind is Kind.HEARTBEAT:
            with contextlib.suppress(zmq.Again):  # a parent that is gone is noticed by the orphan check
                control.send_multipart(encoder.encode(Message(Kind.HEARTBEAT, msg.request_id))[0], zmq.NOBLOCK)
        else:
            self.stop.set()

    def die(self, exc: BaseException) -> None:
        """Tell the parent why the loop crashed, briefly, then let the process exit."""
        try:
            self.send(Message(Kind.DEAD, 0, error_header("worker", exc)))
        finally:
            self.data.close(linger=DEAD_LINGER_MS)


def main(argv: list[str] | None = None) -> None:
    faulthandler.enable()  # a segfault in a model's native code still leaves a traceback in the stderr tail
    # A model's logging records go to stderr, which the parent prints prefixed by stage and replica.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("botocore", "boto3"):  # a media worker's store client: where it found credentials is noise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    worker = Worker(parse_args(argv))
    try:
        worker.run()
    except BaseException as exc:
        worker.die(exc)
        raise
    worker.data.close(linger=DEAD_LINGER_MS)
    worker.control_thread.join()
    worker.context.term()
