"""The classic Keras MNIST MLP walk-through as a library and the `mnist-mlp` command."""

__version__ = "0.1.0"
