"""``SearchSpace``: the schema of a search-space YAML file (``search_spaces/*.yaml``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

__all__ = [
    "CategoricalParam",
    "Constraint",
    "DataFiles",
    "FloatParam",
    "IntParam",
    "DEVICE_METRICS",
    "METRICS",
    "Param",
    "SearchSpace",
    "Split",
    "Task",
    "TRAIN_KEYS",
    "metric_column",
]

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr

#: Names an objective or constraint may use, with the leaderboard column that carries them.
#: ``accuracy`` as an objective is optimised on validation accuracy; the held-out test accuracy is
#: reported in the ``accuracy`` column and never used for selection.
METRICS: dict[str, str] = {
    "accuracy": "val_accuracy",
    "val_accuracy": "val_accuracy",
    "latency_ms": "latency_ms",
    "latency_p90_ms": "latency_p90_ms",
    "best_latency_ms": "best_latency_ms",
    "energy_mj": "energy_mj",
    "size_bytes": "size_bytes",
    "artifact_bytes": "artifact_bytes",
    "peak_mem_bytes": "peak_mem_bytes",
    "params": "params",
    "macs": "macs",
}
TRAINED_METRICS = {"accuracy", "val_accuracy"}
#: Metrics measured on each device of a multi-device search and by each backend of a profile's
#: ``backends``: ``latency_ms@rpi5`` names one device's, ``latency_ms@onnxruntime`` one backend's.
DEVICE_METRICS = ("latency_ms", "latency_p90_ms", "energy_mj")


def metric_column(name: str) -> str:
    """The leaderboard column of an objective or constraint name (``accuracy`` -> ``val_accuracy``,
    ``latency_ms@rpi5`` -> ``latency_ms@rpi5``)."""
    base, at, device = name.partition("@")
    return METRICS[base] + at + device


#: Keys of the ``train`` section, with their defaults when a space leaves them out.
TRAIN_KEYS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.9,
    "beta1": 0.9,
    "beta2": 0.999,
    "rho": 0.9,
    "alpha": 0.99,
    "eps": 1e-8,
    "schedule": "cosine",
    "step_size": 5,
    "gamma": 0.5,
    "milestones": "0.5,0.75",
    "weight_decay": 0.0,
    "l1": 0.0,
    "dropout": 0.0,
    "batch_size": 64,
    "epochs": 10,
    "patience": 0,
    "label_smoothing": 0.0,
}
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "adam", "rmsprop", "nadam")
SCHEDULES = ("constant", "step", "exponential", "piecewise", "cosine")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ParamBase(_Strict):
    when: dict[str, Scalar | list[Scalar]] | None = Field(
        default=None,
        description="Active only when every named parameter (same section, or 'section.name') "
        "has the given value or one of the listed values.",
    )
    per_stage: bool = Field(
        default=False,
        description="Sample one value per stage (names '<name>_0', '<name>_1', ...); needs an "
        "int parameter 'stages' in the same section.",
    )


class CategoricalParam(_ParamBase):
    """One of a list of values."""

    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)


class IntParam(_ParamBase):
    """An integer in ``[low, high]`` on a grid of ``step``, optionally log-uniform."""

    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    step: StrictInt = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"empty range: low ({self.low}) must be <= high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log=true needs low >= 1 and step 1")
        return self


class FloatParam(_ParamBase):
    """A float in ``[low, high]``, optionally log-uniform or on a grid of ``step``."""

    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(default=None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError(f"empty range: low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("log=true and step cannot be combined")
        return self


Param = Annotated[CategoricalParam | IntParam | FloatParam, Field(discriminator="type")]
#: A parameter is either a fixed value or a distribution to sample.
ParamOrConst = Param | Scalar


class Split(_Strict):
    """How the data set is divided; the split is fixed per run, independent of trial seeds."""

    val: float = Field(default=0.2, gt=0, lt=0.5)
    test: float = Field(default=0.2, gt=0, lt=0.5)
    seed: int = 0


class DataFiles(_Strict):
    """The user's own data from files, no code: exactly one of ``npz``, ``images``, ``csv`` (paths
    relative to the working directory)."""

    npz: str | None = Field(
        default=None,
        min_length=1,
        description="A .npz file with arrays x and y (split like digits), or pre-split x_train, y_train, x_val, "
        "y_val, x_test, y_test; integer labels.",
    )
    images: str | None = Field(
        default=None,
        min_length=1,
        description="A folder with one sub-folder of images per class (the sub-folder's name is the class); "
        "decoded with Pillow, resized to task.input_shape [C, H, W] (C 1 or 3), normalised.",
    )
    csv: str | None = Field(
        default=None, min_length=1, description="A CSV file with a header: numeric feature columns and a label."
    )
    label: str | None = Field(default=None, min_length=1, description="The CSV's label column (csv only).")

    @model_validator(mode="after")
    def _one_source(self) -> DataFiles:
        given = [k for k in ("npz", "images", "csv") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of npz, images, csv (got {', '.join(given) or 'none'})")
        if (self.label is not None) != (self.csv is not None):
            raise ValueError("'label' names the label column of a csv source, and a csv source needs it")
        return self

    @property
    def kind(self) -> str:
        """``npz``, ``images`` or ``csv``."""
        return next(k for k in ("npz", "images", "csv") if getattr(self, k))

    @property
    def path(self) -> str:
        """The file or folder."""
        return str(getattr(self, self.kind))


class Task(_Strict):
    """What is learned: a data set and a model family (registry names or ``module:function``)."""

    data: str | DataFiles = Field(
        description="Data set: a registered name (digits, shapes, synthetic), 'pkg.module:load', or files: "
        "{npz: path}, {images: folder}, {csv: path, label: column}."
    )
    model: str = Field(description="Model family: a registered name (mobilenet, mlp) or 'pkg.module:build'.")
    input_shape: list[int] | None = Field(
        default=None,
        description="Input shape without the batch axis; needed for synthetic data and image folders.",
    )
    num_classes: int | None = Field(default=None, ge=1)
    split: Split = Split()


class Constraint(_Strict):
    """A hard bound on a measured metric."""

    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Constraint:
        if self.max is None and self.min is None:
            raise ValueError("a constraint needs 'max' or 'min'")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"empty range: min ({self.min}) must be <= max ({self.max})")
        return self


class SearchSpace(_Strict):
    """A search space: task, architecture and training parameters, objectives and constraints."""

    name: str | None = None
    description: str = ""
    task: Task
    arch: dict[str, ParamOrConst] = Field(default_factory=dict)
    train: dict[str, ParamOrConst] | None = Field(
        default=None, description="Training parameters; leave out for a latency-only study."
    )
    objectives: dict[str, Literal["max", "min"]] = Field(min_length=1)
    constraints: dict[str, Constraint] = Field(default_factory=dict)
    compress: dict[str, Any] = Field(
        default_factory=dict,
        description="Compression techniques (distill, lowrank, prune, quantize) and their settings; "
        "each setting a constant or a distribution, searched with the rest (see autotune.compress).",
    )
    _derived: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def trains(self) -> bool:
        return self.train is not None

    def derived(self, name: str, make: Callable[[], Any]) -> Any:
        """What validation derives from this (frozen) space, made once by ``make`` and kept with it:
        the compression passes' typed settings (``autotune.compress.compress_settings``), so sampling
        a trial does not validate them again."""
        if name not in self._derived:
            self._derived[name] = make()
        return self._derived[name]
