"""What the header of a worker's READY, ERROR, DEAD and RESULT messages holds, as typed records.

    READY   {"pid", "name", "env", "executable", "python", "packages", "devices"}        -> WorkerInfo
    ERROR   {"stage", "type", "message", "traceback", "missing_module"?}                -> ErrorReport
    DEAD    the same as ERROR: the worker's last words                                  -> ErrorReport
    RESULT  {"failed": [[item index, ERROR header], ...]?}  (requests of items)        -> item_errors

The parent checks these when it decodes a message (`workers.protocol.Decoder`), so a worker's garbled
header fails the request it answers instead of surfacing later, mid-run, as a `KeyError` or `TypeError`.
The worker builds them with `to_header`, so both sides agree on one spelling of every field.
"""

from __future__ import annotations

import traceback as tb
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class HeaderError(ValueError):
    """A header whose fields are missing, unknown, or of the wrong type."""


@dataclass(frozen=True)
class ErrorReport:
    """Why a worker failed a request: where (`stage`: import, setup, input, batch, result, protocol, worker),
    the exception's type name and message, its traceback, and for a failed import the module it lacked."""

    stage: str
    type_name: str
    message: str
    traceback: str = ""
    missing_module: str | None = None

    @classmethod
    def of(cls, stage: str, exc: BaseException, missing_module: str | None = None) -> ErrorReport:
        text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        return cls(stage, type(exc).__name__, str(exc), text, missing_module)

    def to_header(self) -> dict[str, Any]:
        header = {"stage": self.stage, "type": self.type_name, "message": self.message, "traceback": self.traceback}
        return header if self.missing_module is None else {**header, "missing_module": self.missing_module}

    @classmethod
    def from_header(cls, header: Any, where: str = "error header") -> ErrorReport:
        _check_keys(header, where, required={"stage", "type", "message"}, optional={"traceback", "missing_module"})
        values = {"stage": header["stage"], "type_name": header["type"], "message": header["message"],
                  "traceback": header.get("traceback", "")}
        for name, value in values.items():
            if not isinstance(value, str):
                raise HeaderError(f"{where}: {name} is a {type(value).__name__!r}, not a string")
        missing = header.get("missing_module")
        if missing is not None and not isinstance(missing, str):
            raise HeaderError(f"{where}: missing_module is a {type(missing).__name__!r}, not a string or None")
        return cls(**values, missing_module=missing)


@dataclass(frozen=True)
class WorkerInfo:
    """Who and where a worker is, from its READY message: what the parent logs and checks."""

    pid: int
    name: str
    env: str
    """The env's name as the worker sees it ('' outside a named env)."""
    executable: str
    python: str
    """`major.minor.micro` of the worker's interpreter."""
    packages: dict[str, str] = field(default_factory=dict)
    """Versions of the packages both sides care about (numpy, pyzmq, msgpack, torch, ...) that it has."""
    devices: str = ""
    """Its CUDA_VISIBLE_DEVICES."""

    def to_header(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_header(cls, header: Any) -> WorkerInfo:
        names = {item.name for item in fields(cls)}
        _check_keys(header, "READY header", required=names, optional=set())
        for item in fields(cls):
            expected = {"pid": int, "packages": dict}.get(item.name, str)
            value = header[item.name]
            if type(value) is not expected:
                raise HeaderError(f"READY header: {item.name} is a {type(value).__name__!r}, not {expected.__name__}")
        packages = header["packages"]
        if not all(isinstance(value, str) for value in packages.values()):
            raise HeaderError("READY header: packages must map names to version strings")
        return cls(**header)


def item_errors(header: dict[str, Any], n_items: int | None) -> dict[int, ErrorReport]:
    """The items a RESULT says failed, by position among its `n_items` results (None: not a list)."""
    failed = header.get("failed", [])
    if not isinstance(failed, list):
        raise HeaderError(f"RESULT header: failed is a {type(failed).__name__!r}, not a list")
    errors: dict[int, ErrorReport] = {}
    for entry in failed:
        if not isinstance(entry, list) or len(entry) != 2 or type(entry[0]) is not int:
            raise HeaderError(f"RESULT header: failed entry {entry!r} is not [item index, error header]")
        index = entry[0]
        if n_items is None or not 0 <= index < n_items or index in errors:
            raise HeaderError(f"RESULT header: failed item {index} is not one of its {n_items or 0} results, "
                              "or is named twice")
        errors[index] = ErrorReport.from_header(entry[1], f"RESULT header: failed item {index}")
    return errors


def _check_keys(header: Any, where: str, required: set[str], optional: set[str]) -> None:
    if not isinstance(header, dict):
        raise HeaderError(f"{where} is a {type(header).__name__!r}, not a map")
    if missing := required - header.keys():
        raise HeaderError(f"{where} lacks {sorted(missing)}")
    if unknown := header.keys() - required - optional:
        raise HeaderError(f"{where} has unknown fields {sorted(unknown)}")
