"""The classic MLP, built from a ModelConfig alone: 784 -> [Dense, activation, Dropout] per hidden layer
-> Dense(10) -> softmax. Knows nothing about optimisers, data or files."""

from __future__ import annotations

import keras

from mnist_mlp.config import ModelConfig

INPUT_DIM = 784  # 28 x 28 pixels, flattened
NUM_CLASSES = 10  # digits 0..9


def build_model(config: ModelConfig = ModelConfig()) -> keras.Model:
    """A Sequential model as the walk-through writes it; 669,706 parameters for the default config."""
    layers: list = [keras.Input(shape=(INPUT_DIM,), name="pixels")]
    for units in config.hidden_units:
        layers.append(keras.layers.Dense(units))
        layers.append(keras.layers.Activation(config.activation))
        if config.dropout > 0:
            layers.append(keras.layers.Dropout(config.dropout))
    layers.append(keras.layers.Dense(NUM_CLASSES))
    layers.append(keras.layers.Activation("softmax"))
    return keras.Sequential(layers, name="mnist_mlp")


def model_summary(model: keras.Model) -> str:
    """`model.summary()` as text."""
    lines: list[str] = []
    model.summary(print_fn=lambda text, **_: lines.append(text))
    return "\n".join(lines).rstrip()
