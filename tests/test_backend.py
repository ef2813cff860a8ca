import json
import sys

import pytest

from mnist_mlp import backend
from mnist_mlp.errors import UserError


def test_precedence_flag_env_keras_json_default(tmp_path):
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    env = {"KERAS_HOME": str(tmp_path), "KERAS_BACKEND": "torch"}
    assert backend.choose_backend("jax", env) == backend.BackendChoice("jax", "--backend / config")
    assert backend.choose_backend("auto", env).name == "torch"
    assert "KERAS_BACKEND" in backend.choose_backend("auto", env).reason
    del env["KERAS_BACKEND"]
    choice = backend.choose_backend("auto", env)
    assert choice.name == "tensorflow" and "keras.json" in choice.reason
    assert backend.choose_backend("auto", {"KERAS_HOME": str(tmp_path / "none")}) == backend.BackendChoice(
        "jax", "default"
    )


def test_unknown_backend_from_env_is_a_user_error():
    with pytest.raises(UserError, match="unknown backend 'theano'"):
        backend.choose_backend("auto", {"KERAS_BACKEND": "theano"})


def test_missing_package_gives_install_hint(monkeypatch):
    monkeypatch.setattr(backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install 'mnist-mlp\[torch\]'") as error:
        backend.activate(backend.BackendChoice("torch", "--backend / config"))
    assert f"`{sys.executable} -m pip install" in str(error.value)  # a bare pip may be another Python's


def test_keras_own_untouched_keras_json_is_not_a_choice(tmp_path):
    (tmp_path / "keras.json").write_text(backend.KERAS_AUTO_JSON)
    assert backend.choose_backend("auto", {"KERAS_HOME": str(tmp_path)}).name == "jax"
    (tmp_path / "keras.json").write_text(backend.KERAS_AUTO_JSON.replace("tensorflow", "torch"))
    assert backend.choose_backend("auto", {"KERAS_HOME": str(tmp_path)}).name == "torch"
