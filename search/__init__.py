"""hpsearch: hyperparameter search for Keras models on Optuna.

The public Python API. Importing this package does not import TensorFlow; ``build_model``,
``run_study`` and ``train_final`` load it on first use.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from search.errors import DataError, SpecError
from search.spec import StudySpec, Task, load_spec

try:
    __version__ = metadata.version("hpsearch")
except metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "DataError",
    "SpecError",
    "StudySpec",
    "Task",
    "build_model",
    "export_best",
    "load_export",
    "load_spec",
    "run_study",
    "train_final",
]

_LAZY = {
    "build_model": "search.model",
    "run_study": "search.runner",
    "export_best": "search.export",
    "load_export": "search.export",
    "train_final": "search.export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
