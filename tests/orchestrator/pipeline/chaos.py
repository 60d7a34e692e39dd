"""Killers for the fault tests: workers killed in a phase they report, the orchestrator killed mid-publish.

Every phase and moment is observed, never assumed from timing: a worker is frozen (SIGSTOP) and its
reported phase read before it is killed; the orchestrator is frozen while the file it is encoding or
publishing is on disk half-made, and that file is checked before the kill.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from orchestrator.atomic import TMP_SUFFIX
from tests.fixtures.controlled_model import PHASES
from tests.orchestrator.pipeline.runs import ROOT, RUN, _default_signals, start, workers_of

PHASE_WAIT_S = 90.0
"""How long a killer looks for a worker in the phase it wants before it reports the phase missed."""
SLOW_FSYNC_US = 1_000_000
"""Every fsync of the orchestrator takes this long (strace's delay injection, a slow disk): a file being
published atomically sits on disk, whole but not yet renamed, long enough to kill the writer there."""


@dataclass(frozen=True)
class Kill:
    worker: str
    phase: str


def _name(process: psutil.Process) -> str:
    cmdline = process.cmdline()
    return cmdline[cmdline.index("--name") + 1]


def _freeze(process: psutil.Process) -> bool:
    """Stop `process` and wait (bounded) until it is stopped; False if it is gone or not a live process."""
    try:
        process.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 2
        while process.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
            if process.status() == psutil.STATUS_ZOMBIE or time.monotonic() > deadline:
                return False
            time.sleep(0.001)
    except psutil.NoSuchProcess:
        return False
    return True


class PhaseKiller(threading.Thread):
    """SIGKILLs workers of the reporting stages, one in each phase (in a seeded order), each at the first
    moment a worker is seen in that phase after a seeded pause.

    A worker is killed only while its stage has calls ahead (fewer begun than `needed`, the calls of an
    undisturbed run) and, for a worker still starting, once its stage's pool runs (another of its workers
    reported a phase): so every kill meets a running pool, which must restart that replica once.
    """

    def __init__(self, parent: psutil.Process, phases_dir: Path, needed: dict[str, int], seed: int) -> None:
        super().__init__(daemon=True)
        self.parent, self.phases_dir, self.needed = parent, phases_dir, needed
        self.rng = random.Random(seed)
        self.done = threading.Event()
        self.kills: list[Kill] = []
        self.missed: list[str] = []

    def run(self) -> None:
        for wanted in self.rng.sample(PHASES, len(PHASES)):
            if self.done.wait(self.rng.uniform(0.05, 0.6)):
                return
            if not self._kill_one(wanted):
                self.missed.append(wanted)

    def _stage_dir(self, process: psutil.Process) -> Path | None:
        try:
            stage = _name(process).partition("/")[0]
        except (psutil.NoSuchProcess, ValueError, IndexError):
            return None
        return self.phases_dir / stage if stage in self.needed else None

    def _phase(self, process: psutil.Process, stage: Path) -> str | None:
        """What the worker reported, "starting" if nothing yet while its pool runs, None when not killable."""
        begun = len((stage / "calls").read_text().splitlines()) if (stage / "calls").exists() else 0
        if begun >= self.needed[stage.name]:
            return None
        try:
            return (stage / str(process.pid)).read_text()
        except FileNotFoundError:
            pool_runs = any(p.name != "calls" and not p.name.endswith(".tmp") for p in stage.iterdir())
            return "starting" if pool_runs else None

    def _kill_one(self, wanted: str) -> bool:
        deadline = time.monotonic() + PHASE_WAIT_S
        while not self.done.is_set() and time.monotonic() < deadline and self.parent.is_running():
            candidates = [(p, d) for p in workers_of(self.parent) if (d := self._stage_dir(p)) is not None
                          and self._phase(p, d) == wanted]
            if candidates:
                victim, stage = self.rng.choice(candidates)
                if _freeze(victim):
                    if self._phase(victim, stage) == wanted:  # frozen: what it reports now stays true
                        name = _name(victim)
                        victim.send_signal(signal.SIGKILL)
                        self.kills.append(Kill(name, wanted))
                        return True
                    victim.send_signal(signal.SIGCONT)
            self.done.wait(0.002)
        return False


@dataclass(frozen=True)
class FileState:
    inode: int
    mtime_ns: int
    sha256: str


def clip_files(out: Path) -> dict[str, FileState]:
    """Every published clip file of `out`, by its path relative to `out`."""
    states = {}
    for path in sorted((out / "clips").glob("*.mp4")):
        stat = path.stat()
        states[path.relative_to(out).as_posix()] = FileState(stat.st_ino, stat.st_mtime_ns,
                                                             hashlib.sha256(path.read_bytes()).hexdigest())
    return states


def _mp4_finished(path: Path) -> bool:
    """True once the encoder has closed the file: an mp4 gets its index box (`moov`) when it is closed."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return True
    offset = 0
    while offset + 8 <= len(data):
        size, kind = int.from_bytes(data[offset:offset + 4], "big"), data[offset + 4:offset + 8]
        if kind == b"moov":
            return True
        if size < 8:
            return False
        offset += size
    return False


def _being_encoded(out: Path) -> list[Path]:
    """Clip files the orchestrator is still encoding: an mp4 outside clips/ that its encoder has not closed."""
    return [p for p in out.rglob("*.mp4") if p.parent != out / "clips" and not _mp4_finished(p)]


def _being_published(out: Path) -> list[Path]:
    """A video's record being written atomically: a temp file beside its target, outside clips/."""
    return [p for p in out.rglob(f"*{TMP_SUFFIX}") if p.parent != out / "clips"
            and not p.name.startswith((".run.json", ".pipeline.json"))]


MOMENTS: dict[str, Callable[[Path], list[Path]]] = {"encode": _being_encoded, "publish": _being_published}


@dataclass
class ParentKill:
    """Where a killed orchestrator was: the half-made file it was on and the clip files published by then."""

    moment: str
    pid: int
    torn: Path
    published: dict[str, FileState]
    workers: list[psutil.Process] = field(default_factory=list)
    """The workers it had when it was killed."""
    runtime_dirs: list[Path] = field(default_factory=list)
    """Its private folders, left behind by the kill for a later run to remove."""


def start_for(config: Path, moment: str) -> tuple[subprocess.Popen[str], psutil.Process]:
    """`orchestrator run CONFIG`, and the orchestrator's process. For a kill mid-publish it runs under strace
    with every fsync delayed (SLOW_FSYNC_US); the first value is then strace."""
    if moment != "publish":
        proc = start(config)
        return proc, psutil.Process(proc.pid)
    tracer = subprocess.Popen(["strace", "-f", "--seccomp-bpf", "-qq", "-o", "/dev/null", "-e", "trace=fsync",
                               "-e", f"inject=fsync:delay_enter={SLOW_FSYNC_US}", *RUN, str(config), "--quiet"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=_default_signals)
    deadline = time.monotonic() + 60
    while not (children := psutil.Process(tracer.pid).children()):
        assert tracer.poll() is None and time.monotonic() < deadline, tracer.communicate()
        time.sleep(0.01)
    return tracer, children[0]


def kill_parent_at(parent: psutil.Process, out: Path, moment: str, seed: int) -> ParentKill:
    """Kill `parent` during the first or second (seeded) file it encodes or publishes after a video of its
    is finished (its clips published, then a record seen being written is in place), once that file is
    seen half-made with the parent frozen."""
    find, skip = MOMENTS[moment], random.Random(seed).randrange(0, 2)
    writing: set[Path] = set()
    finished = False
    seen: set[Path] = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and parent.is_running():
        time.sleep(0.002)
        if not finished:
            if any((out / "clips").glob("*.mp4")):
                now = set(_being_published(out))
                finished, writing = bool(writing - now), writing | now
            continue
        fresh = [p for p in find(out) if p not in seen and p not in writing]
        seen.update(fresh)
        if fresh and len(seen) > skip and _freeze(parent):
            torn = next((p for p in find(out) if p in fresh), None)  # still half-made, with the parent frozen
            if torn is not None:
                kill = ParentKill(moment, parent.pid, torn.relative_to(out), clip_files(out), workers_of(parent),
                                  list(Path(tempfile.gettempdir()).glob(f"orch-run-{parent.pid}-*")))
                parent.send_signal(signal.SIGKILL)
                return kill
            parent.send_signal(signal.SIGCONT)
    parent.kill()
    raise AssertionError(f"the run ended (or 300 s passed) before it was seen mid-{moment} after a finished video "
                         f"(records seen written: {sorted(map(str, writing))}; then {sorted(map(str, seen))})")
