"""The classic Keras MNIST MLP walk-through as a library and the `mnist-mlp` command."""

from mnist_mlp.backend import default_on_import

__version__ = "0.1.0"

default_on_import()  # before anyone imports Keras: JAX by default, not Keras' own TensorFlow
