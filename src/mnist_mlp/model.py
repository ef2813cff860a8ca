"""The classic MLP, built from a ModelConfig alone: 784 -> [Dense, activation, Dropout] per hidden layer
-> Dense(10) -> softmax. Knows nothing about optimisers, data or files."""

from __future__ import annotations

import functools

import keras
import numpy as np

from mnist_mlp.config import ModelConfig
from mnist_mlp.errors import UserError

INPUT_DIM = 784  # 28 x 28 pixels, flattened
NUM_CLASSES = 10  # digits 0..9


def build_model(config: ModelConfig = ModelConfig(), precision: str = "float32") -> keras.Model:
    """A Sequential model as the walk-through writes it; 669,706 parameters for the default config.
    precision "bfloat16": its products take bfloat16 inputs with float32 sums (BFloat16Dense)."""
    dense = {"float32": keras.layers.Dense, "bfloat16": BFloat16Dense}[precision]  # "auto" is resolved before
    layers: list = [keras.Input(shape=(INPUT_DIM,), name="pixels")]
    for units in config.hidden_units:
        layers.append(dense(units))
        layers.append(keras.layers.Activation(config.activation))
        if config.dropout > 0:
            layers.append(keras.layers.Dropout(config.dropout))
    layers.append(dense(NUM_CLASSES))
    layers.append(keras.layers.Activation("softmax"))
    return keras.Sequential(layers, name="mnist_mlp")


@keras.saving.register_keras_serializable(package="mnist_mlp")
class BFloat16Dense(keras.layers.Dense):
    """keras.layers.Dense whose product rounds its inputs to bfloat16 and sums in float32 (train.precision =
    "bfloat16"): weights, bias and outputs stay float32, and so does every other step. Keras' mixed_bfloat16
    policy rounds the outputs too, which this CPU runs no faster than float32. On JAX only; float32
    elsewhere."""

    def call(self, inputs, training=None):
        if keras.backend.backend() != "jax":
            return super().call(inputs)
        x = _bf16_matmul()(inputs, keras.ops.convert_to_tensor(self.kernel))
        x = x if self.bias is None else x + self.bias
        return x if self.activation is None else self.activation(x)


@functools.cache
def _bf16_matmul():
    """x @ w from bfloat16 inputs with float32 sums, forward and backward. On the CPU, XLA runs such a product
    fast (~2x float32 here) only when the left operand is not transposed; the weight gradient's product, x.T @
    g, would be, so x.T is written out as a real copy first (a swap of axes through a 3-d reshape, which XLA
    does not fold into the product). Measured: docs/benchmarks.md."""
    import jax
    import jax.numpy as jnp

    def product(a, b):
        return jnp.dot(a, b, preferred_element_type=jnp.float32)

    def transposed(a):
        if jax.devices()[0].platform != "cpu":
            return a.T
        return jnp.swapaxes(a.reshape(a.shape[0], 1, a.shape[1]), 0, 2).reshape(a.shape[1], a.shape[0])

    @jax.custom_vjp
    def matmul(x, w):
        return product(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))

    def forward(x, w):
        x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
        return product(x16, w16), (x16, w16)

    def backward(saved, g):
        x16, w16 = saved
        g16 = g.astype(jnp.bfloat16)
        return product(g16, w16.T), product(transposed(x16), g16)

    matmul.defvjp(forward, backward)
    return matmul


def first_layer_weights(model: keras.Model) -> np.ndarray:
    """The kernel (784, units) of the first layer that has weights: one column of pixel weights per unit."""
    kernel = next(layer for layer in model.layers if layer.weights).get_weights()[0]
    if kernel.ndim != 2 or kernel.shape[0] != INPUT_DIM:
        raise UserError(
            f"the model's first layer takes {kernel.shape[0]} inputs, not the {INPUT_DIM} pixels of a "
            "28x28 digit, so its weights are not images; --weights draws the first layer of an MNIST MLP"
        )
    return kernel


def model_summary(model: keras.Model) -> str:
    """`model.summary()` as text."""
    lines: list[str] = []
    model.summary(print_fn=lambda text, **_: lines.append(text))
    return "\n".join(lines).rstrip()
