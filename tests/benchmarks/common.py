"""Shared pieces of the benchmark suites: the digits study, the search space, final models."""

from __future__ import annotations

import os
import statistics
import textwrap
import time
from pathlib import Path
from typing import Any

# Errors too: Keras' numpy input pipeline makes TensorFlow 2.21 log a harmless NodeDef error
# per fit (arms (b), (c) and the final models feed numpy arrays).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[2]

# The nine hyperparameters every arm searches (early stopping is fixed: patience 5).
SPACE = {
    "learning_rate": (3e-4, 3e-2),  # log
    "batch_size": [16, 32, 64, 128],
    "n_layers": (1, 3),
    "units": (32, 256),  # log, one value for every layer
    "activation": ["relu", "tanh", "elu"],
    "optimizer": ["adam", "nadam", "rmsprop"],
    "dropout": (0.0, 0.5),
    "l2": (1e-6, 1e-2),  # log
}
PATIENCE = 5


def study_yaml(name: str, seed: int, max_epochs: int, pruner: str = "",
               n_trials: int = 10_000, fixed_epochs: bool = False) -> str:
    """The digits study in hpsearch's format: its defaults unless ``pruner`` says otherwise.

    ``fixed_epochs``: every trial runs ``max_epochs`` epochs (no early stop).
    """
    epochs_low = max(1, max_epochs // 3)
    epochs = (str(max_epochs) if fixed_epochs else
              f"{{low: {epochs_low}, high: {max_epochs}, step: {epochs_low}}}")
    patience = 10 * max_epochs if fixed_epochs else PATIENCE
    pruner_line = f"  pruner: {pruner}\n" if pruner else ""
    return textwrap.dedent(f"""\
        study:
          name: {name}
          metric: val_loss
          n_trials: {n_trials}
          seed: {seed}
        """) + pruner_line + textwrap.dedent(f"""\
        data:
          source: sklearn:digits
          validation_fraction: 0.2
          test_fraction: 0.2
          seed: 0
          scaling: standard
        search:
          learning_rate: {{low: 3.0e-4, high: 3.0e-2, log: true}}
          epochs: {epochs}
          batch_size: {{choices: [16, 32, 64, 128]}}
          n_layers: {{low: 1, high: 3}}
          units: {{low: 32, high: 256, log: true}}
          activation: {{choices: [relu, tanh, elu]}}
          optimizer: {{choices: [adam, nadam, rmsprop]}}
          dropout: {{low: 0.0, high: 0.5}}
          l2: {{low: 1.0e-6, high: 1.0e-2, log: true}}
          early_stopping: {{patience: {patience}}}
        """)


def write_study(folder: Path, **kwargs: Any) -> Path:
    path = folder / f"{kwargs['name']}.yaml"
    path.write_text(study_yaml(**kwargs))
    return path


def digits_data() -> Any:
    """hpsearch's train/validation splits of the digits study (scaled): every arm's data."""
    from search.data import load_search_data
    from search.spec import load_spec

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(write_study(Path(tmp), name="data", seed=0, max_epochs=30))
        return load_search_data(spec)


def final_test_accuracy(params: dict[str, Any], epochs: int, seed: int) -> float:
    """Train the configuration on train + validation for ``epochs``; accuracy on the test split.

    The same procedure for every arm (the test split is read here and nowhere else in the
    benchmarks).
    """
    import tempfile

    import keras

    from search.data import final_splits
    from search.model import build_model
    from search.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(write_study(Path(tmp), name="final", seed=seed, max_epochs=30))
        splits = final_splits(spec, "train+val")
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build_model(params, splits.input_shape, splits.task)
    model.fit(splits.x_fit, splits.y_fit, batch_size=int(params["batch_size"]),
              epochs=int(epochs), verbose=0)
    _, accuracy = model.evaluate(splits.x_test, splits.y_test, verbose=0)
    return float(accuracy)


class Timeline:
    """(seconds since start, best value so far) after each trial of an arm."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.points: list[tuple[float, float]] = []
        self.best = float("inf")

    def add(self, value: float | None) -> None:
        if value is not None and value < self.best:
            self.best = value
        self.points.append((time.perf_counter() - self.start, self.best))

    def time_to(self, target: float) -> float | None:
        """When the best value first was <= target (None: never)."""
        for seconds, best in self.points:
            if best <= target:
                return seconds
        return None


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (default: this one), MB."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")
