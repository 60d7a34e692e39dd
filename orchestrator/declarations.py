"""A model's declarations as the parent holds them: decoded and checked from what `workers.describe` sent.

The parent never holds a model instance. Everything it decides about a model (which env, which
weights, how many GPUs, whether calls are batched, how a split reads a video, how its results are typed) comes
from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.model_interface import ModelInterface, SplitWindow
from orchestrator.dataset.schema import parse_type
from orchestrator.errors import ConfigError
from workers.describe import describe


@dataclass(frozen=True)
class ModelDeclarations:
    """What one configured model declares (its class's properties, read with the configured params)."""

    class_name: str
    conda_env_name: str
    weights_names: tuple[str, ...] = ()
    id_file_mapping: Mapping[str, tuple[str, ...] | None] = field(default_factory=dict)
    num_gpus: float = 1.0
    batched: bool = False
    split_window: SplitWindow | None = None
    outputs: Mapping[str, str] | None = None
    """Each result field's Arrow type (see ModelInterface.outputs); None: inferred by the clip table."""

    @property
    def label(self) -> str:
        """How messages and tables name the model: its class name."""
        return self.class_name

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelDeclarations:
        """Decode `workers.describe.describe`'s output; ConfigError naming the class and the bad field."""
        label = data.get("class")
        if not isinstance(label, str) or not label:
            raise ConfigError(f"a model description has no class name: {dict(data)!r}")
        check = _Checker(label, data)
        return cls(
            class_name=label,
            conda_env_name=check.string("conda_env_name"),
            weights_names=tuple(check.strings("weights_names")),
            id_file_mapping=check.file_mapping(),
            num_gpus=check.number("num_gpus"),
            batched=check.flag("batched"),
            split_window=check.split_window(),
            outputs=check.outputs(),
        )

    @classmethod
    def of(cls, model: ModelInterface) -> ModelDeclarations:
        """The declarations of a model instance held in this process (a worker's, or a test's)."""
        return cls.from_dict(describe(model))


class _Checker:
    """Type checks with messages that say which model declared what."""

    def __init__(self, label: str, data: Mapping[str, Any]) -> None:
        self.label, self.data = label, data

    def _fail(self, name: str, expected: str) -> ConfigError:
        return ConfigError(f"model {self.label} declares {name} = {self.data.get(name)!r}, which is not {expected}")

    def string(self, name: str) -> str:
        value = self.data.get(name)
        if not isinstance(value, str) or not value:
            raise self._fail(name, "a non-empty string")
        return value

    def strings(self, name: str) -> list[str]:
        value = self.data.get(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(name, "a list of strings")
        return value

    def number(self, name: str) -> float:
        value = self.data.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise self._fail(name, "a number >= 0")
        return float(value)

    def flag(self, name: str) -> bool:
        value = self.data.get(name)
        if not isinstance(value, bool):
            raise self._fail(name, "True or False")
        return value

    def file_mapping(self) -> dict[str, tuple[str, ...] | None]:
        value = self.data.get("id_file_mapping")
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and (v is None or (isinstance(v, list) and all(isinstance(f, str) for f in v)))
                for k, v in value.items()):
            raise self._fail("id_file_mapping", "a mapping of weights names to lists of file names or None")
        return {name: None if files is None else tuple(files) for name, files in value.items()}

    def split_window(self) -> SplitWindow | None:
        value = self.data.get("split_window")
        if value is None:
            return None
        step, context = (value.get("step"), value.get("context")) if isinstance(value, dict) else (None, None)
        if not (type(step) is int and type(context) is int and step >= 1 and context >= 0):
            raise self._fail("split_window", "SplitWindow(step >= 1, context >= 0)")
        return SplitWindow(step, context)

    def outputs(self) -> dict[str, str] | None:
        value = self.data.get("outputs")
        if value is None:
            return None
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise self._fail("outputs", "a mapping of result field names to Arrow type strings")
        for name, text in value.items():
            try:
                parse_type(text)
            except ValueError as exc:
                raise ConfigError(f"model {self.label} declares outputs[{name!r}] = {text!r}, which is not a "
                                  f"type: {exc} (see docs/dataset.md)") from None
        return dict(value)
