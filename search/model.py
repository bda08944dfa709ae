"""Keras models from a plain params dict. Knows nothing about Optuna.

The built-in model is an MLP: ``n_layers`` x (Dense(units_i, activation, L2) [+ Dropout]) and an
output layer that follows the task. A user builder replaces it:

    model:
      builder: "my_package.models:build"

    def build(params: dict, input_shape: tuple[int, ...], task: search.spec.Task) -> keras.Model

``params`` holds every hyperparameter of the trial (``units`` as a list per layer, ``extra``
values by their own names). Return an *uncompiled* model whose output fits ``task`` (softmax over
``task.n_classes`` for multiclass, one sigmoid unit for binary, one linear unit for regression)
and hpsearch compiles it with the optimizer, learning rate, loss and metrics of the task. A model
returned already compiled is used as it is; it must then report the study's metric.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# TensorFlow's C++ start-up chatter (oneDNN, CPU features) would drown the CLI's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from search.errors import SpecError
from search.spec import Task

Builder = Callable[[dict[str, Any], tuple[int, ...], Task], keras.Model]

_OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "nadam": keras.optimizers.Nadam,
    "adamax": keras.optimizers.Adamax,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
}


def build_model(params: dict[str, Any], input_shape: tuple[int, ...], task: Task) -> keras.Model:
    """The built-in MLP, compiled for ``task``."""
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    units = list(params.get("units") or [])
    regularizer = keras.regularizers.L2(params["l2"]) if params.get("l2") else None
    for i in range(int(params["n_layers"])):
        x = keras.layers.Dense(
            units[i], activation=params["activation"], kernel_regularizer=regularizer,
            name=f"dense_{i}",
        )(x)
        if params.get("dropout"):
            x = keras.layers.Dropout(params["dropout"], name=f"dropout_{i}")(x)
    outputs = output_layer(task)(x)
    model = keras.Model(inputs, outputs, name="mlp")
    compile_model(model, params, task)
    return model


def output_layer(task: Task) -> keras.layers.Layer:
    """The last layer for ``task``: softmax, sigmoid or linear."""
    if task.kind == "multiclass":
        return keras.layers.Dense(task.n_classes, activation="softmax", name="output")
    if task.kind == "binary":
        return keras.layers.Dense(1, activation="sigmoid", name="output")
    return keras.layers.Dense(1, name="output")


def task_loss_and_metrics(task: Task) -> tuple[str, list[keras.metrics.Metric]]:
    """The loss and metrics of ``task``; metric names match spec.METRICS_BY_TASK."""
    if task.kind == "multiclass":
        return "sparse_categorical_crossentropy", [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        ]
    if task.kind == "binary":
        return "binary_crossentropy", [
            keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")
        ]
    return "mean_squared_error", [
        keras.metrics.MeanAbsoluteError(name="mae"),
        keras.metrics.RootMeanSquaredError(name="rmse"),
    ]


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """An optimizer by name with its learning rate."""
    return _OPTIMIZERS[name](learning_rate=learning_rate)


def compile_model(model: keras.Model, params: dict[str, Any], task: Task) -> None:
    """Compile with the params' optimizer and learning rate and the task's loss and metrics."""
    loss, metrics = task_loss_and_metrics(task)
    model.compile(
        optimizer=make_optimizer(params["optimizer"], params["learning_rate"]),
        loss=loss,
        metrics=metrics,
    )


def resolve_builder(ref: str, spec_file: str | None = None) -> Builder:
    """Import ``package.module:function``; the study file's folder and the cwd are searched."""
    module_name, _, func_name = ref.partition(":")
    for folder in (Path.cwd(), Path(spec_file).resolve().parent if spec_file else None):
        if folder is not None and str(folder) not in sys.path:
            sys.path.append(str(folder))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SpecError(spec_file, "model.builder", "an importable module", f"<{ref}: {e}>") from e
    func = getattr(module, func_name, None)
    if not callable(func):
        raise SpecError(spec_file, "model.builder", f"a function {func_name} in {module_name}",
                        f"<{ref}: no such function>")
    return func


def build_with(
    builder: Builder | None, params: dict[str, Any], input_shape: tuple[int, ...], task: Task
) -> keras.Model:
    """Build with the user builder (compiling it if it is not) or the built-in MLP."""
    if builder is None:
        return build_model(params, input_shape, task)
    model = builder(dict(params), tuple(input_shape), task)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model builder returned {type(model).__name__}, expected keras.Model")
    if not model.compiled:
        compile_model(model, params, task)
    return model
