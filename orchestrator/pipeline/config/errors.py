"""Every problem of a pipeline config in plain words, each located by the stage's name and the field.

    pydantic's errors ──▶ (where, what) ──▶ `stage 'ocr': unknown field 'replica' (did you mean 'replicas'?)`
                                            `field 'clip_codec': this FFmpeg build has no video encoder 'h265'`

`where` is the location pydantic reports (`('stages', 1, 'replica')`), kept so that the caller can add the
file's line; `what` names the stage by its `name:` (or its position when it has none) instead of its index.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

Location = tuple[int | str, ...]

_ALLOWED: dict[str, str] = {
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number", "float_type": "must be a number", "float_parsing": "must be a number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be text", "list_type": "must be a list", "tuple_type": "must be a list",
    "dict_type": "must be a mapping", "model_type": "must be a mapping of fields",
    "model_attributes_type": "must be a mapping of fields",
}
"""What a value of the wrong type must be instead, by pydantic's error type."""

_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


@dataclass(frozen=True)
class ConfigProblem:
    """One problem: where pydantic located it (for the file's line), and the sentence a user reads."""

    where: Location
    message: str


def config_problems(errors: Sequence[ErrorDetails], data: dict[str, Any], root: type[BaseModel]) -> list[ConfigProblem]:
    """Each of pydantic's `errors` about `data` (validated as `root`) as a plain sentence, in order; a missing
    field that an unknown one beside it is the misspelling of is said once, as the unknown one."""
    misspelt = {(*e["loc"][:-1], close) for e in errors if e["type"] == "extra_forbidden"
                for close in _close(str(e["loc"][-1]), _fields_at(root, tuple(e["loc"][:-1])))}
    return [ConfigProblem(tuple(error["loc"]), _sentence(error, data, root)) for error in errors
            if not (error["type"] == "missing" and tuple(error["loc"]) in misspelt)]


def problem_at(where: Location, data: dict[str, Any], text: str) -> ConfigProblem:
    """A problem found outside pydantic (`text` about the value at `where`), its stage named the same way."""
    subject, _ = _subject(where, data)
    return ConfigProblem(where, subject + text)


def did_you_mean(word: str, choices: Sequence[str], prefix: str = "") -> str:
    """` (did you mean '<prefix>x'?)` for the closest of `choices`, or nothing when none is close."""
    close = _close(word, choices)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _close(word: str, choices: Sequence[str]) -> list[str]:
    return difflib.get_close_matches(word, choices, n=1, cutoff=0.6)


def _sentence(error: ErrorDetails, data: dict[str, Any], root: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    subject, path = _subject(loc, data)
    kind = error["type"]
    if kind == "extra_forbidden":
        *parents, key = map(str, path)
        prefix = "".join(f"{p}." for p in parents)
        known = _fields_at(root, loc[:-1])
        owner = f"{parents[-1]}'s" if parents else "the"
        hint = did_you_mean(key, known, prefix) or (f" ({owner} fields: {', '.join(known)})" if len(known) <= 8 else "")
        return f"{subject}unknown field '{prefix}{key}'{hint}"
    dotted = ".".join(map(str, path))
    if kind == "missing":
        return f"{subject}missing field '{dotted}'"
    return f"{subject}{f'field {dotted!r}: ' if path else ''}{_plain(error)}"


def _subject(loc: Location, data: dict[str, Any]) -> tuple[str, Location]:
    """`stage 'ocr': ` and the rest of the path for a location inside a stage; nothing and `loc` otherwise."""
    stages = data.get("stages")
    if len(loc) < 2 or loc[0] != "stages" or not isinstance(loc[1], int) or not isinstance(stages, list):
        return "", loc
    stage = stages[loc[1]] if loc[1] < len(stages) else None
    name = stage.get("name") if isinstance(stage, dict) else None
    label = f"stage {name!r}" if isinstance(name, str) and name else f"stage {loc[1] + 1} (no name)"
    return f"{label}: ", loc[2:]


def _plain(error: ErrorDetails) -> str:
    """pydantic's complaint about a value, in plain words, with the value given."""
    kind, ctx, got = error["type"], error.get("ctx") or {}, _shown(error["input"])
    if kind in _ALLOWED:
        return f"{_ALLOWED[kind]} (got {got})"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"must be {_BOUNDS[kind]} {bound:g} (got {got})"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        hint = did_you_mean(str(error["input"]), choices)
        return f"must be one of {', '.join(choices)} (got {got}){hint}"
    if kind in ("too_short", "too_long"):
        limit = ctx.get("min_length" if kind == "too_short" else "max_length")
        return f"takes {'at least' if kind == 'too_short' else 'at most'} {limit} item(s) (got {got})"
    if kind == "string_too_short":
        return "cannot be empty"
    if kind == "string_pattern_mismatch":
        return f"must start with a letter or _ and hold only letters, digits and _ (got {got})"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"].replace("Input should be", "must be")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fields_at(root: type[BaseModel], loc: Location) -> list[str]:
    model = _model_at(root, loc)
    return sorted(model.model_fields) if model else []


def _model_at(root: type[BaseModel], loc: Location) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `loc` (None where no model does: a plain dict)."""
    model: type[BaseModel] | None = root
    annotation: Any = root
    for step in loc:
        if isinstance(step, str):
            if model is None or step not in model.model_fields:
                return None
            annotation = model.model_fields[step].annotation
        else:
            annotation = next(iter(typing.get_args(annotation)), None)
        model = _model_in(annotation)
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds directly, or through `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next((m for a in typing.get_args(annotation) if (m := _model_in(a))), None)
    return None
