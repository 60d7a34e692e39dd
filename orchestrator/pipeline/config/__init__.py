"""`config.yaml` for `orchestrator run`, validated; every error names the file, the field and what is allowed.

    inputs: [videos/, "more/*.mp4"]
    output: out/run1
    stages:
      - {name: shots, split: models.transnetv2.TransNetV2ShotDetector, frames: {size: [48, 27]}}
      - {name: ocr, model: models.rapidocr.RapidOCRTextReader, frames: {sampling: one_per_clip}}
      - {name: keep, filter: {min_duration_s: 1.0, max: {content.unsafe_score: 0.5}}}
      - {name: dedup, dedup: {column: embed.embedding, method: semantic, threshold: 0.95}}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import av
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from orchestrator.dataset.shards import parse_size
from orchestrator.errors import ConfigError
from orchestrator.model_source import absolute_class_path
from orchestrator.pipeline.config.errors import ConfigProblem, Location, config_problems, problem_at
from orchestrator.pipeline.config.model_paths import class_path_problem
from orchestrator.yaml_errors import describe_yaml_error, line_of, load_with_nodes
from workers.media.s3 import ObjectError, is_s3, split_url
from workers.model_input import InputSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FrameSpec(_Strict):
    """Which frames a stage sees, and at what size."""

    size: tuple[int, int] | None = None
    """(width, height) to resize to; None keeps the video's own size."""
    sampling: Literal["every_frame", "per_second", "one_per_clip"] = "every_frame"
    rate: float = Field(1.0, gt=0)
    """Frames per second when sampling is per_second."""
    max_frames: int = Field(256, ge=1)
    """The most frames of one clip this stage sees, spread evenly over what `sampling` picks: a clip's
    frames are held in memory until its stages are done, so a long shot must not hold them all."""

    @field_validator("size")
    @classmethod
    def _positive(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and min(size) < 1:
            raise ValueError("width and height must be positive")
        return size


class FilterSpec(_Strict):
    """Keep a clip only if every rule holds; a rule reads `<stage>.<field>` of the clip's results."""

    min_duration_s: float = 0.0
    max: dict[str, float] = Field(default_factory=dict)
    min: dict[str, float] = Field(default_factory=dict)
    present: list[str] = Field(default_factory=list)
    """Fields that must be non-empty (e.g. `ocr.text` for clips with on-screen text)."""
    absent: list[str] = Field(default_factory=list)


class DedupSpec(_Strict):
    """Near-duplicate removal over every kept clip in the output folder, earlier runs' included: of clips
    whose `column` values are near, the first (in the folder's order, earlier runs' clips first) is kept and
    each later one marked `duplicate_of` it (and filtered, unless `filter: false`)."""

    column: str
    """`<stage>.<field>`: a float vector (semantic) or a 64-bit hex string (phash) that an earlier stage returns."""
    method: Literal["semantic", "phash"]
    threshold: float | None = Field(None, gt=0, le=1)
    """semantic: the cosine similarity at which two clips are duplicates (default 0.95)."""
    max_distance: int | None = Field(None, ge=0, le=64)
    """phash: the most differing bits at which two clips are duplicates (default 6)."""
    filter: bool = True
    """Filter duplicates (`kept: false`, `filtered_by: [<stage>]`, clip file removed); false only marks them."""
    batch_videos: int = Field(64, ge=1)
    """Dedup runs after every this many videos reach the writer, and once more at the end of the run."""

    @field_validator("column")
    @classmethod
    def _stage_and_field(cls, column: str) -> str:
        if not re.fullmatch(r"[A-Za-z_]\w*\.[A-Za-z_]\w*", column):
            raise ValueError(f"must be <stage>.<field>, as in embed.embedding (got {column!r})")
        return column

    @model_validator(mode="after")
    def _setting_of_method(self) -> DedupSpec:
        other = "max_distance" if self.method == "semantic" else "threshold"
        if other in self.model_fields_set:
            raise ValueError(f"{other} applies to method {'phash' if other == 'max_distance' else 'semantic'}, "
                             f"not {self.method}")
        return self

    @property
    def limit(self) -> float:
        """The threshold (semantic) or max_distance (phash), defaults filled in."""
        if self.method == "semantic":
            return 0.95 if self.threshold is None else self.threshold
        return 6 if self.max_distance is None else self.max_distance


def replica_count(value: Any) -> Any:
    """A `replicas` setting: a whole number, at least 1, or `auto`."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise PydanticCustomError("replicas", "must be a whole number, at least 1, or auto (got {value})",
                              {"value": repr(value)})


def max_replicas_only_when_auto(settings: _Replicated) -> Any:
    """`max_replicas` means something only with `replicas: auto`: refused otherwise, not ignored."""
    if "max_replicas" in settings.model_fields_set and settings.replicas != "auto":
        raise ValueError(f"max_replicas applies to replicas: auto (replicas is {settings.replicas})")
    return settings


class _Replicated(Protocol):
    model_fields_set: set[str]
    replicas: int | str


class StageConfig(_Strict):
    """One step: `split` (a model that finds clips in a whole video), `model` (per clip), `filter`, or `dedup`
    (once the streaming steps have finished a batch of videos)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    split: str | None = None
    model: str | None = None
    filter: FilterSpec | None = None
    dedup: DedupSpec | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    env: str | None = Field(None, min_length=1)
    """The env the model runs in, when it cannot be read from the model's source (a computed
    `conda_env_name` in a module that imports what the orchestrator's environment lacks)."""
    input: dict[str, Any] | None = None
    """How the model receives a clip's frames: {form: dict|frames, type: numpy|torch, layout: NHWC|NCHW,
    dtype: e.g. float32}; unset, what its `__call__` annotates (torch.Tensor: an (N, 3, H, W) uint8 tensor,
    a numpy array: the (N, H, W, 3) array), else {"frames": (N, H, W, 3) uint8}."""
    replicas: int | Literal["auto"] = 1
    """Worker processes for this stage, or `auto`: start with one and add more while the run measures this
    stage as its slowest and cores (or GPU shares) are free, up to `max_replicas`."""
    max_replicas: int = Field(4, ge=1)
    """The most replicas `replicas: auto` grows to."""
    threads: int | None = Field(None, ge=1)
    """Intra-op threads per replica (torch, onnxruntime, OpenMP); default: the machine's cores shared among
    every stage's replicas (for `auto`, its `max_replicas`)."""
    batch_size: int = Field(1, ge=1)
    """Items per request (clips for `model` stages); the model still sees one item at a time."""
    frames: FrameSpec = FrameSpec()
    max_attempts: int = Field(3, ge=1)
    """Times an item may lose its worker (killed, crashed, hung) before it fails alone."""
    max_restarts: int = Field(3, ge=0)
    """Deaths in a row, with nothing answered in between, a replica survives before it is given up."""
    request_timeout_s: float = Field(600.0, gt=0)
    """A request a worker has been on this long means it hangs: it is killed and the items retried."""
    heartbeat_timeout_s: float = Field(60.0, gt=0)
    """A worker, idle or busy, that answers no heartbeat within this long is frozen: it is killed and restarted."""
    resources: dict[str, float] = Field(default_factory=dict)
    """On Ray (`--executor ray`): custom resources each replica reserves, to pin the stage to node kinds
    (e.g. {ocr_node: 1}); the local executor ignores them."""

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, value: dict[str, float]) -> dict[str, float]:
        reserved = sorted(set(value) & {"CPU", "GPU", "memory", "object_store_memory"})
        if reserved:
            raise ValueError(f"resources names custom resources; {reserved} are set by threads and the "
                             f"model's num_gpus")
        if any(amount < 0 for amount in value.values()):
            raise ValueError("resources amounts cannot be negative")
        return value

    @field_validator("replicas", mode="before")
    @classmethod
    def _replica_count(cls, value: Any) -> Any:
        return replica_count(value)

    @field_validator("input")
    @classmethod
    def _valid_input(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else InputSpec.from_dict(value).to_dict()

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> StageConfig:
        kinds = [k for k in ("split", "model", "filter", "dedup") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"needs exactly one of split, model, filter or dedup (has {', '.join(kinds) or 'none'})")
        return self

    @model_validator(mode="after")
    def _max_replicas_only_when_auto(self) -> StageConfig:
        return max_replicas_only_when_auto(self)

    @property
    def class_path(self) -> str | None:
        return self.split or self.model

    @property
    def auto_replicas(self) -> bool:
        return self.replicas == "auto"

    @property
    def start_replicas(self) -> int:
        """Replicas the stage starts with: one for `auto`."""
        return 1 if self.replicas == "auto" else self.replicas

    @property
    def most_replicas(self) -> int:
        """Replicas the stage may ever run at once."""
        return self.max_replicas if self.replicas == "auto" else self.replicas

    def result_fields(self) -> dict[str, Any]:
        """What decides this stage's results (not how fast or how robustly they are made): a finished video
        is reused by a later run only if these are unchanged."""
        return self.model_dump(mode="json", include=_RESULT_FIELDS)


_RESULT_FIELDS = {"name", "split", "model", "filter", "dedup", "params", "frames", "input"}


class ShardsConfig(_Strict):
    """WebDataset shards of the kept clips, written at the end of a run (see orchestrator.dataset.shards)."""

    max_bytes: int
    """The most bytes of one tar: a whole number or a size such as 500MB, 1GB, 2GiB."""

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_size(value)


MEDIA_STEPS = ("decode", "cut", "encode")
"""The media steps' names (decode for the split, cut clips and sample their frames, encode kept clips):
they name stats like model stages do, so no stage may take them."""


class MediaConfig(_Strict):
    """The media workers: processes that decode, cut, sample and encode, supervised like model replicas."""

    replicas: int | Literal["auto"] = 1
    """Worker processes per media step, or `auto` (grow while the step is the run's slowest)."""
    max_replicas: int = Field(4, ge=1)
    threads: int | None = Field(None, ge=1)
    """FFmpeg threads per media worker; default: the machine's cores shared with the model stages."""
    hardware: Literal["auto", "off"] = "auto"
    """auto: decode on NVDEC and encode on NVENC (for libx264) where the run has a GPU and FFmpeg can use them
    (said once when it cannot); off: always on the CPU."""

    @field_validator("replicas", mode="before")
    @classmethod
    def _replica_count(cls, value: Any) -> Any:
        return replica_count(value)

    @model_validator(mode="after")
    def _max_replicas_only_when_auto(self) -> MediaConfig:
        return max_replicas_only_when_auto(self)


class ClipsConfig(_Strict):
    """Which clips get a file."""

    encode: Literal["kept", "all", "none"] = "kept"
    """kept: encode each clip the filters keep, once they have judged it (dropped clips cost no encode);
    all: encode every clip as it is cut (one full decode fewer; pays when filters drop few); none: write
    no clip files (the table and embeddings only)."""


class PipelineConfig(_Strict):
    inputs: list[str] = Field(min_length=1)
    output: str
    stages: list[StageConfig] = Field(min_length=1)
    clip_codec: str = "libx264"
    strict: bool = False
    """Fail a video that decodes short of what its container declares (truncated or damaged) instead of
    keeping its clips with a `truncated` note."""
    shards: ShardsConfig | None = None
    """Write WebDataset shards of the kept clips once a run has finished (after dedup)."""
    media: MediaConfig = MediaConfig()
    clips: ClipsConfig = ClipsConfig()

    @model_validator(mode="after")
    def _stage_order(self) -> PipelineConfig:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        if taken := [name for name in names if name in MEDIA_STEPS]:
            raise ValueError(f"stage name {taken[0]!r} is the name of a media step ({', '.join(MEDIA_STEPS)}); "
                             f"give the stage another name")
        if self.stages[0].split is None or any(s.split for s in self.stages[1:]):
            raise ValueError("the first stage, and only the first, must be a 'split' stage that finds clips")
        self._dedup_order()
        return self

    def _dedup_order(self) -> None:
        """Dedup stages come after every streaming stage, each reading a column a model stage returns."""
        kinds = ["dedup" if s.dedup else "stream" for s in self.stages]
        if "dedup" in kinds and "stream" in kinds[kinds.index("dedup"):]:
            raise ValueError("dedup stages run once the streaming stages are done with a batch of videos, so "
                             "they come last")
        models = {s.name for s in self.stages if s.model}
        for stage in self.stages:
            if stage.dedup and stage.dedup.column.split(".")[0] not in models:
                raise ValueError(f"stage {stage.name!r}: dedup column {stage.dedup.column!r} must name a field of "
                                 f"a model stage ({', '.join(sorted(models)) or 'there is none'})")

    @property
    def streaming(self) -> PipelineConfig:
        """This config without its dedup stages: what the executor streams videos through."""
        return self.model_copy(update={"stages": [s for s in self.stages if s.dedup is None]})

    @property
    def dedup_stages(self) -> list[StageConfig]:
        return [s for s in self.stages if s.dedup is not None]

    @field_validator("output")
    @classmethod
    def _output_location(cls, output: str) -> str:
        if is_s3(output):
            try:
                split_url(output)
            except ObjectError as exc:
                raise ValueError(str(exc)) from None
        return output

    @field_validator("clip_codec")
    @classmethod
    def _known_codec(cls, codec: str) -> str:
        try:
            if not av.codec.Codec(codec, "w").type == "video":
                raise ValueError(f"{codec!r} is not a video codec")
        except av.codec.codec.UnknownCodecError:
            raise ValueError(f"this FFmpeg build has no video encoder {codec!r} (libx264 is the default)") from None
        return codec

    def results_key(self) -> dict[str, Any]:
        """Everything that decides the outputs of a video; resuming needs it unchanged."""
        key = {"stages": [s.result_fields() for s in self.stages], "clip_codec": self.clip_codec}
        if self.clips.encode == "none":  # kept and all give the same outputs; none gives no clip files
            key["clip_files"] = False
        return key


def load_config(path: Path, inputs: list[str] | None = None, output: str | None = None) -> tuple[PipelineConfig, Path]:
    """Parse `path`; `inputs`/`output` override the file's. Relative paths in the file resolve against the
    config's folder, those given on the command line against the current directory. A config with problems
    raises one ConfigError listing every problem found, each with its line in the file."""
    given = _command_line(inputs, output)
    data, nodes = _read(path)
    data = {**data, **given}
    config_dir = path.resolve().parent
    problems = _model_problems(data, (config_dir, Path.cwd()))
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = config_problems(exc.errors(), data, PipelineConfig) + problems
    if problems:
        raise ConfigError(_report(path, problems, lambda where: None if where[0] in given else line_of(nodes, where)))
    return config, config_dir


def _command_line(inputs: list[str] | None, output: str | None) -> dict[str, Any]:
    """The fields the command line sets, its paths made absolute against the current directory."""
    given: dict[str, Any] = {}
    if inputs:
        given["inputs"] = [i if is_s3(i) else str(Path(i).absolute()) for i in inputs]
    if output:
        given["output"] = output if is_s3(output) else str(Path(output).absolute())
    return given


def _read(path: Path) -> tuple[dict[str, Any], yaml.Node]:
    """The file's mapping and its YAML nodes (which know each value's line)."""
    try:
        data, nodes = load_with_nodes(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(describe_yaml_error(path, exc)) from None
    if not isinstance(data, dict) or nodes is None:
        raise ConfigError(f"{path}: expected a mapping with inputs, output and stages")
    return data, nodes


def _model_problems(data: dict[str, Any], search_dirs: tuple[Path, Path]) -> list[ConfigProblem]:
    """Each stage whose model's file, module or class does not exist (read from the source, not imported)."""
    stages = data.get("stages")
    problems = []
    for index, stage in enumerate(stages if isinstance(stages, list) else []):
        for kind in ("split", "model"):
            class_path = stage.get(kind) if isinstance(stage, dict) else None
            if not isinstance(class_path, str):
                continue
            if problem := class_path_problem(absolute_class_path(class_path, search_dirs[0]), search_dirs):
                problems.append(problem_at(("stages", index, kind), data, f"model {class_path!r}: {problem}"))
    return problems


def _report(path: Path, problems: list[ConfigProblem], line: Callable[[Location], int | None]) -> str:
    """One line for one problem; a count, then a line per problem, in the file's order, for several."""
    located = sorted(((line(p.where) if p.where else None) or 0, p.message) for p in problems)
    lines = [f"line {number}: {message}" if number else message for number, message in located]
    if len(lines) == 1:
        return f"{path}: {lines[0]}"
    return f"{path}: {len(lines)} problems\n" + "\n".join(f"  {text}" for text in lines)
