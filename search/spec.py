"""The study file: YAML in, a validated and frozen :class:`StudySpec` out.

This is the one module that knows the schema. It imports neither Optuna nor Keras, so that
``hpsearch validate`` and the tests can check a study file cheaply. Every hyperparameter can be a
plain value (fixed) or a mapping: ``{low, high, log, step}`` for a range, ``{choices: [...]}`` for
a categorical. Errors name the file, the key path, what was expected and what was given.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from search.errors import SpecError

TaskKind = Literal["binary", "multiclass", "regression"]
ACTIVATIONS: tuple[str, ...] = (
    "relu", "tanh", "elu", "selu", "gelu", "swish", "silu", "sigmoid", "softplus",
    "leaky_relu", "linear",
)
OPTIMIZERS: tuple[str, ...] = (
    "adam", "adamw", "nadam", "adamax", "sgd", "rmsprop", "adagrad", "adadelta",
)
SKLEARN_DATASETS: dict[str, str] = {
    "digits": "multiclass",
    "iris": "multiclass",
    "wine": "multiclass",
    "breast_cancer": "binary",
    "diabetes": "regression",
}
# The validation metrics each task's model reports (see search.model.task_metrics).
METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "binary": ("val_loss", "val_accuracy", "val_auc"),
    "multiclass": ("val_loss", "val_accuracy"),
    "regression": ("val_loss", "val_mae", "val_rmse"),
}
ALL_METRICS: tuple[str, ...] = ("val_loss", "val_accuracy", "val_auc", "val_mae", "val_rmse")
MAXIMIZED_METRICS: frozenset[str] = frozenset({"val_accuracy", "val_auc"})


@dataclass(frozen=True)
class Task:
    """What the model predicts: the task kind and, for classification, the number of classes."""

    kind: str
    n_classes: int = 0

    @property
    def metrics(self) -> tuple[str, ...]:
        return METRICS_BY_TASK[self.kind]


def metric_direction(metric: str) -> str:
    """The direction in which a validation metric improves."""
    return "maximize" if metric in MAXIMIZED_METRICS else "minimize"


# --------------------------------------------------------------------------------------------
# Hyperparameters: fixed value, range or categorical.


class _Invalid(ValueError):
    """Raised inside validators; carries the pieces of a SpecError and an optional sub-key."""

    def __init__(self, expected: str, given: object, sub: str | None = None) -> None:
        super().__init__(f"expected {expected}, got {given!r}")
        self.expected = expected
        self.given = given
        self.sub = sub


@dataclass(frozen=True)
class _Rule:
    """What values one hyperparameter accepts."""

    type: Literal["float", "int", "str", "any"]
    min: float | None = None
    min_open: bool = False  # min is excluded
    max: float | None = None
    max_open: bool = False
    names: tuple[str, ...] | None = None

    def describe(self) -> str:
        if self.type == "str":
            return "one of " + ", ".join(self.names or ())
        if self.type == "any":
            return "a number, a string or a boolean"
        text = "an integer" if self.type == "int" else "a number"
        bounds = []
        if self.min is not None:
            bounds.append(f"{'>' if self.min_open else '>='} {_fmt(self.min)}")
        if self.max is not None:
            bounds.append(f"{'<' if self.max_open else '<='} {_fmt(self.max)}")
        return text + (" " + " and ".join(bounds) if bounds else "")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _coerce(value: Any, rule: _Rule, sub: str | None = None) -> Any:
    """Check one value against a rule and return it in its canonical Python type."""
    if rule.type == "any":
        if isinstance(value, (bool, int, float, str)):
            return value
        raise _Invalid(rule.describe(), value, sub)
    if rule.type == "str":
        if isinstance(value, str) and value in (rule.names or ()):
            return value
        raise _Invalid(rule.describe(), value, sub)
    if isinstance(value, bool):
        raise _Invalid(rule.describe(), value, sub)
    if rule.type == "float" and isinstance(value, str):
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept it as the number the user meant.
        try:
            value = float(value)
        except ValueError:
            raise _Invalid(rule.describe(), value, sub) from None
    if rule.type == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise _Invalid(rule.describe(), value, sub)
    elif not isinstance(value, (int, float)):
        raise _Invalid(rule.describe(), value, sub)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise _Invalid(rule.describe(), value, sub)
    too_low = rule.min is not None and (value <= rule.min if rule.min_open else value < rule.min)
    too_high = rule.max is not None and (value >= rule.max if rule.max_open else value > rule.max)
    if too_low or too_high:
        raise _Invalid(rule.describe(), value, sub)
    return value


class HParam(BaseModel):
    """One hyperparameter: ``kind`` is fixed, float, int or categorical."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["fixed", "float", "int", "categorical"]
    value: Any = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    per_layer: bool = False  # only meaningful for `units`

    @property
    def searched(self) -> bool:
        return self.kind != "fixed"

    def describe(self) -> str:
        """A one-line, human-readable description of the distribution."""
        if self.kind == "fixed":
            return f"fixed {self.value!r}"
        if self.kind == "categorical":
            return "choice of " + ", ".join(repr(c) for c in self.choices)
        text = f"{self.kind} in [{self.low}, {self.high}]"
        if self.log:
            text += " log"
        if self.step is not None and not (self.kind == "int" and self.step == 1):
            text += f" step {self.step}"
        return text

    def upper(self) -> Any:
        """The largest value this parameter can take (for numeric parameters)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return max(self.choices)
        return self.high


_RANGE_KEYS = ("low", "high", "log", "step")


def _parse_hparam(raw: Any, rule: _Rule, allow_per_layer: bool = False) -> HParam:
    """Turn the YAML of one hyperparameter into an :class:`HParam`, or raise :class:`_Invalid`."""
    if isinstance(raw, HParam):
        return raw
    if isinstance(raw, dict) and "kind" in raw:
        # The canonical form, as stored with a study (StudySpec.canonical()).
        return HParam.model_validate(raw)
    shapes = "a fixed value, a range {low, high[, log, step]} or {choices: [...]}"
    if isinstance(raw, list):
        raise _Invalid(shapes, raw)
    if not isinstance(raw, dict):
        return HParam(kind="fixed", value=_coerce(raw, rule))
    raw = dict(raw)
    per_layer = raw.pop("per_layer", False)
    if per_layer is not False and not allow_per_layer:
        raise _Invalid("no per_layer key (only units takes per_layer)", per_layer, "per_layer")
    if not isinstance(per_layer, bool):
        raise _Invalid("true or false", per_layer, "per_layer")
    if "choices" in raw:
        extra = sorted(set(raw) - {"choices"})
        if extra:
            raise _Invalid("choices alone (a range uses low/high instead)", extra[0], extra[0])
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise _Invalid("a non-empty list of choices", choices, "choices")
        values = tuple(_coerce(c, rule, f"choices[{i}]") for i, c in enumerate(choices))
        if len(set(values)) != len(values):
            raise _Invalid("distinct choices", choices, "choices")
        return HParam(kind="categorical", choices=values, per_layer=per_layer)
    unknown = sorted(set(raw) - set(_RANGE_KEYS))
    if unknown:
        raise _Invalid(
            "one of the keys low, high, log, step, choices"
            + (", per_layer" if allow_per_layer else ""),
            unknown[0],
            unknown[0],
        )
    if rule.type in ("str", "any"):
        raise _Invalid("a fixed value or {choices: [...]} (this parameter has no range)", raw)
    for key in ("low", "high"):
        if key not in raw:
            raise _Invalid(f"both low and high in a range ({key} is missing)", raw)
    low = _coerce(raw["low"], rule, "low")
    high = _coerce(raw["high"], rule, "high")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise _Invalid("true or false", log, "log")
    step = raw.get("step")
    if low > high:
        raise _Invalid(f"low <= high (high is {high})", low, "low")
    if log and low <= 0:
        raise _Invalid("low > 0 when log is true", low, "low")
    if step is not None:
        step_rule = _Rule(rule.type, min=0, min_open=True)
        step = _coerce(step, step_rule, "step")
        if log and not (rule.type == "int" and step == 1):
            raise _Invalid("no step when log is true (Optuna cannot combine them)", step, "step")
    if rule.type == "int" and step is None:
        step = 1
    return HParam(
        kind=rule.type, low=low, high=high, log=log, step=step, per_layer=per_layer
    )


def _hparam(rule: _Rule, *, per_layer: bool = False) -> Any:
    """An annotated HParam field type whose YAML is parsed with ``rule``."""
    return Annotated[
        HParam, BeforeValidator(lambda raw: _parse_hparam(raw, rule, allow_per_layer=per_layer))
    ]


def _fixed(value: Any) -> Any:
    return Field(default_factory=lambda: HParam(kind="fixed", value=value))


_LR = _Rule("float", min=0, min_open=True)
_POS_INT = _Rule("int", min=1)
_NONNEG_INT = _Rule("int", min=0)
_RATE = _Rule("float", min=0, max=1, max_open=True)
_NONNEG = _Rule("float", min=0)
_ACT = _Rule("str", names=ACTIVATIONS)
_OPT = _Rule("str", names=OPTIMIZERS)
_ANY = _Rule("any")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EarlyStoppingSpec(_Strict):
    """Early stopping on the study metric; both settings may be searched."""

    patience: _hparam(_NONNEG_INT) = _fixed(10)
    min_delta: _hparam(_NONNEG) = _fixed(0.0)


class SearchSpace(_Strict):
    """The hyperparameters of the model and its training, each fixed or searched."""

    learning_rate: _hparam(_LR) = _fixed(1e-3)
    epochs: _hparam(_POS_INT) = _fixed(50)
    batch_size: _hparam(_POS_INT) = _fixed(32)
    n_layers: _hparam(_NONNEG_INT) = _fixed(2)
    units: _hparam(_POS_INT, per_layer=True) = _fixed(64)
    activation: _hparam(_ACT) = _fixed("relu")
    optimizer: _hparam(_OPT) = _fixed("adam")
    dropout: _hparam(_RATE) = _fixed(0.0)
    l2: _hparam(_NONNEG) = _fixed(0.0)
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    extra: dict[str, _hparam(_ANY)] = Field(default_factory=dict)

    @field_validator("extra")
    @classmethod
    def _extra_names(cls, extra: dict[str, HParam]) -> dict[str, HParam]:
        taken = set(cls.model_fields) | {"patience", "min_delta"}
        for name in extra:
            if name in taken or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise _Invalid(
                    "a new identifier that is not a built-in hyperparameter", name, name
                )
        return extra

    def items(self) -> list[tuple[str, HParam]]:
        """Every hyperparameter with its name, early stopping flattened, extras last."""
        names = ["learning_rate", "epochs", "batch_size", "n_layers", "units", "activation",
                 "optimizer", "dropout", "l2"]
        pairs = [(name, getattr(self, name)) for name in names]
        pairs += [("patience", self.early_stopping.patience),
                  ("min_delta", self.early_stopping.min_delta)]
        return pairs + sorted(self.extra.items())


# --------------------------------------------------------------------------------------------
# Study, data and model settings.


def _named(value: Any) -> Any:
    """Accept `sampler: tpe` as shorthand for `sampler: {name: tpe}`."""
    return {"name": value} if isinstance(value, str) else value


class SamplerSpec(_Strict):
    """An Optuna sampler by name; ``options`` go to its constructor."""

    name: Literal["tpe", "random", "cmaes", "gp", "qmc"] = "tpe"
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerSpec(_Strict):
    """An Optuna pruner by name; ``options`` go to its constructor."""

    name: Literal["hyperband", "median", "percentile", "successive_halving", "none"] = "hyperband"
    options: dict[str, Any] = Field(default_factory=dict)


class StudySettings(_Strict):
    """How the search runs: name, objective, budget, seed, sampler and pruner."""

    name: str | None = Field(default=None, min_length=1)
    direction: Literal["minimize", "maximize"] | None = None
    metric: str = "val_loss"
    n_trials: int = Field(default=20, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    seed: int = 0
    deterministic: bool = True
    sampler: Annotated[SamplerSpec, BeforeValidator(_named)] = Field(default_factory=SamplerSpec)
    pruner: Annotated[PrunerSpec, BeforeValidator(_named)] = Field(default_factory=PrunerSpec)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in ALL_METRICS:
            raise _Invalid("a validation metric: " + ", ".join(ALL_METRICS), metric)
        return metric

    @model_validator(mode="after")
    def _direction_matches_metric(self) -> StudySettings:
        natural = metric_direction(self.metric)
        if self.direction is not None and self.direction != natural:
            raise _Invalid(f"{natural} for metric {self.metric}", self.direction, "direction")
        return self

    @property
    def resolved_direction(self) -> str:
        return self.direction or metric_direction(self.metric)


class DataSpec(_Strict):
    """Where the data comes from and how it is split and scaled."""

    source: str
    target: str = "target"
    task: TaskKind | None = None
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    scaling: Literal["standard", "minmax", "none"] = "standard"

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        kind, _, rest = source.partition(":")
        if kind == "sklearn" and rest in SKLEARN_DATASETS:
            return source
        if kind in ("csv", "npz") and rest:
            return source
        raise _Invalid(
            "sklearn:" + "|".join(SKLEARN_DATASETS) + ", csv:PATH or npz:PATH", source
        )

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> DataSpec:
        if self.validation_fraction + self.test_fraction >= 1:
            raise _Invalid(
                "validation_fraction + test_fraction < 1",
                self.validation_fraction + self.test_fraction,
                "test_fraction",
            )
        return self

    @property
    def kind(self) -> str:
        return self.source.partition(":")[0]

    @property
    def location(self) -> str:
        return self.source.partition(":")[2]


class ModelSpec(_Strict):
    """The built-in MLP, or a user builder ``package.module:function``."""

    type: Literal["mlp"] = "mlp"
    builder: str | None = None

    @field_validator("builder")
    @classmethod
    def _builder_reference(cls, ref: str | None) -> str | None:
        if ref is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", ref):
            raise _Invalid("'package.module:function'", ref)
        return ref


class StudySpec(_Strict):
    """A whole study file, validated. ``path`` is where it was read from (None if in memory)."""

    study: StudySettings = Field(default_factory=StudySettings)
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    search: SearchSpace = Field(default_factory=SearchSpace)
    path: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _metric_fits_task(self) -> StudySpec:
        task = self.data.task or SKLEARN_DATASETS.get(self.data.location if
                                                      self.data.kind == "sklearn" else "")
        if task and self.study.metric not in METRICS_BY_TASK[task]:
            raise _Invalid(
                f"a metric that a {task} task produces: " + ", ".join(METRICS_BY_TASK[task]),
                self.study.metric,
                "study.metric",
            )
        return self

    @property
    def name(self) -> str:
        """The study name: ``study.name``, else the file's stem."""
        if self.study.name:
            return self.study.name
        return Path(self.path).stem if self.path else "hpsearch"

    @property
    def base_dir(self) -> Path:
        """Relative data paths are resolved from the study file's directory."""
        return Path(self.path).resolve().parent if self.path else Path.cwd()

    def canonical(self) -> dict[str, Any]:
        """The spec as plain data, with every default filled in."""
        return self.model_dump(mode="json")

    def search_hash(self) -> str:
        """A hash of what defines the search (the budget and timeout excluded)."""
        data = self.canonical()
        for key in ("n_trials", "timeout", "name"):
            data["study"].pop(key, None)
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_overrides(
        self,
        *,
        n_trials: int | None = None,
        timeout: float | None = None,
        name: str | None = None,
    ) -> StudySpec:
        """A copy with command-line overrides applied (None leaves a setting unchanged)."""
        update = {k: v for k, v in
                  {"n_trials": n_trials, "timeout": timeout, "name": name}.items()
                  if v is not None}
        if not update:
            return self
        return self.model_copy(update={"study": self.study.model_copy(update=update)})

    def check_metric_for(self, task: Task) -> None:
        """Raise a SpecError if the study metric is not one that ``task`` produces."""
        if self.study.metric not in task.metrics:
            raise SpecError(
                self.path,
                "study.metric",
                f"a metric that a {task.kind} task produces: " + ", ".join(task.metrics),
                self.study.metric,
            )


# --------------------------------------------------------------------------------------------
# Loading.


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file. Raises :class:`SpecError` on any problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(file, None, "an existing study file", "<no such file>") from None
    except OSError as e:
        raise SpecError(file, None, "a readable study file", f"<{e.strerror}>") from e
    return parse_spec(text, file)


def parse_spec(text: str, file: str | None = None) -> StudySpec:
    """Validate the YAML text of a study file; ``file`` is used in error messages and paths."""
    try:
        raw = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        tag = getattr(e, "problem", "") or str(e)
        raise SpecError(
            file, _yaml_where(e), "plain YAML (tags such as !!python/... are not allowed)",
            f"<{tag.strip()}>",
        ) from e
    except yaml.YAMLError as e:
        raise SpecError(file, _yaml_where(e), "valid YAML", f"<{_yaml_problem(e)}>") from e
    return validate_spec(raw, file)


def validate_spec(raw: Any, file: str | None = None) -> StudySpec:
    """Validate an already parsed study (a mapping)."""
    if not isinstance(raw, dict):
        shown = "<empty file>" if raw is None else f"<{type(raw).__name__}: {raw!r:.60}>"
        raise SpecError(file, None, "a mapping with keys study, data, model, search", shown)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as e:
        raise _to_spec_error(e, file) from None
    return spec.model_copy(update={"path": file})


def _yaml_where(e: yaml.YAMLError) -> str | None:
    mark = getattr(e, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else None


def _yaml_problem(e: yaml.YAMLError) -> str:
    return str(getattr(e, "problem", None) or e).strip()


def _to_spec_error(e: ValidationError, file: str | None) -> SpecError:
    errors = [_one_error(err, file) for err in e.errors()]
    first = errors[0]
    if len(errors) > 1:
        first.args = ("\n".join(str(err) for err in errors),)
    return first


def _one_error(err: Any, file: str | None) -> SpecError:
    loc = [str(part) for part in err["loc"]]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _Invalid):
        if cause.sub and not (loc and loc[-1] == cause.sub):
            loc.append(cause.sub)
        return SpecError(file, ".".join(loc), cause.expected, cause.given)
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return SpecError(
            file, ".".join(loc), "one of the keys " + ", ".join(allowed), "<unknown key>"
        )
    if kind == "missing":
        return SpecError(file, ".".join(loc), "a value (this key is required)", "<nothing>")
    expected = err["msg"]
    for prefix in ("Input should be ", "Value error, "):
        expected = expected.removeprefix(prefix)
    return SpecError(file, ".".join(loc), expected, err.get("input"))


def _allowed_keys(loc: list[str]) -> list[str]:
    model: type[BaseModel] = StudySpec
    for part in loc:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [name for name in model.model_fields if name != "path"]
