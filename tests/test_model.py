"""The built-in MLP from a plain params dict."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import search
from search.spec import Task

PARAMS = {"n_layers": 2, "units": [8, 4], "activation": "tanh", "dropout": 0.1, "l2": 1e-4,
          "optimizer": "rmsprop", "learning_rate": 0.003}


@pytest.mark.parametrize(("task", "outputs", "activation", "loss"), [
    (Task("multiclass", 5), 5, "softmax", "sparse_categorical_crossentropy"),
    (Task("binary", 2), 1, "sigmoid", "binary_crossentropy"),
    (Task("regression"), 1, "linear", "mean_squared_error"),
])
def test_output_layer_and_loss_follow_the_task(task, outputs, activation, loss):
    model = search.build_model(PARAMS, (6,), task)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [8, 4, outputs]
    assert dense[0].activation.__name__ == "tanh"
    assert dense[-1].activation.__name__ == activation
    assert isinstance(dense[0].kernel_regularizer, keras.regularizers.L2)
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers) == 2
    assert model.loss == loss
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.003)
    assert model.predict(np.zeros((3, 6)), verbose=0).shape == (3, outputs)


def test_no_hidden_layer_is_a_linear_model():
    model = search.build_model({**PARAMS, "n_layers": 0, "units": []}, (6,), Task("regression"))
    assert model.count_params() == 7
