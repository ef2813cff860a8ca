import re
import shlex
from pathlib import Path

import pytest

from mnist_mlp.config import Config, ModelConfig, config_to_toml, load_config
from mnist_mlp.errors import UserError
from mnist_mlp.presets import presets

DEFAULT_TOML = Path(__file__).parent.parent / "configs" / "default.toml"


def test_default_toml_is_the_classic_example():
    config = load_config(DEFAULT_TOML)
    assert config == Config()
    assert config.model == ModelConfig(hidden_units=(512, 512), activation="relu", dropout=0.2)
    assert (config.train.optimizer, config.train.batch_size, config.train.epochs) == ("rmsprop", 128, 20)
    assert config.train.seed == 20160715


def test_toml_round_trip(tmp_path):
    config = load_config(None, ["model.hidden_units=[256, 128, 64]", "train.optimizer=adam", "backend=torch"])
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(config))
    assert load_config(path) == config
    assert config.model.hidden_units == (256, 128, 64)


def test_overrides_apply_after_file_and_parse_types():
    config = load_config(DEFAULT_TOML, ["train.epochs=3", "model.dropout=0", "train.learning_rate=1e-3"])
    assert config.train.epochs == 3
    assert config.model.dropout == 0.0 and isinstance(config.model.dropout, float)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.epochs=0", "train.epochs"),
        ("train.epochs=-1", "train.epochs"),
        ("model.dropout=1", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("train.batch_size=0", "train.batch_size"),
        ("model.hidden_units=[]", "model.hidden_units"),
        ("model.hidden_units=[512, 0]", "model.hidden_units"),
        ("train.learning_rate=0", "train.learning_rate"),
        ("train.optimizer=adamm", "train.optimizer"),
        ("model.activation=rleu", "model.activation"),
        ("train.validation=holdout", "train.validation"),
        ("backend=theano", "backend"),
        ("train.epochs=2.5", "train.epochs"),
        ("train.epochs=true", "train.epochs"),
        ("train.epochs=ten", "train.epochs"),
        ("model.hidden_units=512", "model.hidden_units"),
        ("train.epoch=3", "train.epoch"),
        ("modle.dropout=0.1", "modle"),
        ("augment.elastic_sigma=0", "augment.elastic_sigma"),
        ("augment.elastic_sigma=29", "augment.elastic_sigma"),
        ("augment.translation=15", "--set augment.translation=..."),  # the key itself, so the advice works
        ("augment.elastic_alpha=201", "--set augment.elastic_alpha=..."),
        ("augment.scale=1", "--set augment.scale=..."),
        ("augment.shear=60", "--set augment.shear=..."),
        ("augment.rotation=181", "--set augment.rotation=..."),
        ("train.precision=float16", "train.precision"),
        ("train.checkpoint_seconds=-1", "train.checkpoint_seconds"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(UserError) as error:
        load_config(DEFAULT_TOML, [override])
    message = str(error.value)
    assert key in message and "\n" not in message


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "none.toml")
    with pytest.raises(UserError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_every_shipped_preset_loads_by_name():
    from mnist_mlp.presets import presets

    names = [name for name in presets() if name != "sweep"]  # sweep.toml is a search space
    assert {"default", "fast", "record-cpu", "handwriting"} <= set(names)
    loaded = {name: load_config(name) for name in names}
    assert loaded["default"] == Config()
    assert loaded["record-cpu"].augment.active and loaded["record-cpu"].train.validation == "none"
    assert not loaded["fast"].augment.active
    assert loaded["handwriting"].augment.active and loaded["handwriting"].train.precision == "auto"


@pytest.mark.parametrize("bad", ["train=1", "model=[1]", "train.epochs.x=1", "trian.epochs=1"])
def test_a_wrong_set_path_is_blamed_on_that_set_and_the_example_given_works(bad):
    with pytest.raises(UserError) as error:
        load_config(None, [bad, "train.epochs=3"])  # a later, good --set: the message must not blame it
    message = str(error.value)
    assert message.startswith(f"--set {bad}:")
    example = message.partition("e.g. --set ")[2]
    if example:  # as a shell reads it: quoted where zsh would glob the brackets
        # The example is a key with its default value
        assert load_config(None, shlex.split(example)) == Config()


def test_more_training_images_than_there_are_and_a_byte_order_mark(tmp_path):
    from mnist_mlp.fits import check_fits

    for argv, most in (
        (["train.train_samples=60001"], "60000"),
        (["train.train_samples=50001", "train.validation=split"], "50000"),
    ):
        with pytest.raises(
            UserError, match=f"use at most {most}"
        ):  # it was taken, recorded and trained on fewer
            check_fits(load_config(None, argv))
    check_fits(load_config(None, ["train.train_samples=50000", "train.validation=split"]))
    bom = tmp_path / "notepad.toml"  # Windows Notepad saves UTF-8 with a byte-order mark
    bom.write_bytes(b"\xef\xbb\xbf[train]\nepochs = 1\n")
    assert load_config(bom).train.epochs == 1


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
def test_a_config_saved_by_windows_powershell_is_read_and_other_bytes_say_save_as_utf8(encoding, tmp_path):
    """PowerShell 5's `>` writes UTF-16 with a byte-order mark: it was "unreadable ('utf-8' codec can't decode
    byte 0xff ...)"; it is read. Text in another encoding says what to do."""
    shell = tmp_path / "powershell.toml"
    mark = "\ufeff" if encoding == "utf-16-be" else ""  # "utf-16" writes its own
    shell.write_bytes(f"{mark}[train]\r\nepochs = 1\r\n".encode(encoding))
    assert load_config(shell).train.epochs == 1
    latin = tmp_path / "latin.toml"
    latin.write_bytes("# \u00e9poques\n[train]\nepochs = 1\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin.toml is not UTF-8 text; save it as UTF-8 \(a TOML file\)$"):
        load_config(latin)


def test_spaces_around_a_word_are_not_part_of_it_and_a_wrong_choice_says_what_it_got():
    """--set "train.optimizer = adam" said "must be one of rmsprop, adam, ..." (the value was " adam")."""
    assert load_config(None, ["train.optimizer = adam", "model.activation= tanh "]).train.optimizer == "adam"
    with pytest.raises(UserError, match=r"train.optimizer must be one of rmsprop, adam, .* \(got 'adm'\)"):
        load_config(None, ["train.optimizer=adm"])


def test_a_handout_beats_a_preset_of_its_name_and_a_folder_or_binary_file_says_what_to_give(
    tmp_path, monkeypatch
):
    """`--config handwriting` took the shipped preset over the teacher's handwriting.toml beside it; a run
    folder or its model.keras as --config said "Is a directory" / "save it as UTF-8"."""
    monkeypatch.chdir(tmp_path)
    Path("handwriting.toml").write_text("[train]\nepochs = 1\n")
    assert load_config("handwriting").train.epochs == 1
    # No fast.toml here
    assert load_config("fast").train.epochs == load_config(presets()["fast"]).train.epochs
    with pytest.raises(
        UserError, match=r"config file \./fast not found; .* a preset by name \(without \./\)"
    ):
        load_config("./fast")  # a path, as written
    Path("fast").mkdir()
    with pytest.raises(UserError, match=r"^config file fast is a folder; give a TOML file$"):
        load_config("fast/")  # a folder, as written (it trained the shipped preset)
    Path("run").mkdir()
    Path("run/config.toml").write_text("")
    Path("run/model.keras").write_bytes(b"PK\x03\x04\x00\x00 a zip")
    with pytest.raises(
        UserError, match=r"^config file run is a folder; give a TOML file, e.g. run/config.toml$"
    ):
        load_config("run")
    with pytest.raises(
        UserError, match=r"^config file run/model.keras is not a text file; give a TOML file$"
    ):
        load_config("run/model.keras")


def _within(seconds: int):
    """A block that fails instead of hanging (a read that waits on a named pipe)."""
    import contextlib
    import signal

    def expire(*_):
        raise TimeoutError(f"still waiting after {seconds} s")

    @contextlib.contextmanager
    def block():
        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    return block()


def test_a_device_a_named_pipe_or_a_huge_file_is_no_config_and_a_shell_pipe_is(tmp_path):
    """/dev/zero was read until the kernel killed the process (~24 GB); a named pipe waited unseen."""
    import os

    from mnist_mlp.space import load_space

    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * 2**20 + "\n")
    with _within(20):
        for path, expected in [
            ("/dev/zero", "config file /dev/zero is a device or socket, not a file; give a TOML file"),
            ("/dev/urandom", "is a device or socket"),
            (str(fifo), "is a named pipe, which would wait for a writer; give a TOML file"),
            (str(huge), "holds more than 1 MB, more than any config file does"),
        ]:
            with pytest.raises(UserError, match=expected):
                load_config(path)
        with pytest.raises(UserError, match="sweep space /dev/zero is a device"):
            load_space("/dev/zero", Config())
    read, write = os.pipe()  # what the shell hands over for --config <(command)
    os.write(write, b"[train]\nepochs = 3\n")
    os.close(write)
    try:
        assert load_config(f"/dev/fd/{read}").train.epochs == 3
    finally:
        os.close(read)


@pytest.mark.parametrize(
    "settings, bound",
    [
        (
            ["augment.elastic_sigma=0.0001", "augment.elastic_alpha=30"],
            "augment.elastic_sigma must be in [3, 28]",
        ),
        (["augment.elastic_alpha=200"], "augment.elastic_alpha must be <= 80 (Simard 2003: 34"),
        (["augment.scale=0.9999"], "augment.scale must be <= 0.4"),
        (["augment.rotation=90"], "augment.rotation must be <= 30 degrees"),
        (["augment.translation=10"], "augment.translation must be <= 4 pixels"),
        (["augment.stroke=2"], "augment.stroke must be <= 1 pixel"),
    ],
)
def test_deformations_that_destroy_the_digits_are_refused_with_the_bound(settings, bound):
    """Legal-looking values turned digits into noise (sigma 0.0001, alpha 200) or specks (scale 0.9999)."""
    from mnist_mlp.fits import check_fits

    with pytest.raises(UserError, match=re.escape(bound)):
        check_fits(load_config(None, settings))  # before training; a run that holds them still reads back
    for preset in ("record-cpu", "handwriting"):  # the shipped deformations stay inside
        assert load_config(preset).augment.active


def test_a_flag_does_not_hide_a_bad_set_of_the_same_key(tmp_path, capsys):
    """`--set train.epochs=twenty --epochs 1` trained one epoch without a word about "twenty"."""
    from mnist_mlp.cli import main

    out = tmp_path / "run"
    assert main(["train", "--set", "train.epochs=twenty", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.epochs must be" in err and "'twenty'" in err
    assert not out.exists()


def test_a_model_too_big_for_memory_is_told_the_batch_that_fits_or_that_none_does():
    """ "or a smaller batch" was advised for a model that could not fit at any batch size."""
    from mnist_mlp.fits import check_fits, memory_needed

    huge = load_config(None, ["model.hidden_units=[100000, 100000, 100000]"])
    with pytest.raises(UserError, match=r"use fewer or narrower layers \(no batch size fits this model\)$"):
        check_fits(huge, memory=16 * 2**30)
    wide = load_config(None, ["model.hidden_units=[4096, 4096]", "train.batch_size=60000"])
    memory = int(memory_needed(load_config(None, ["model.hidden_units=[4096, 4096]"])) / 0.8) * 2
    with pytest.raises(UserError, match=r"or train.batch_size \d+ or less$") as refused:
        check_fits(wide, memory=memory)
    fits = int(re.search(r"train.batch_size (\d+)", str(refused.value))[1])
    check_fits(
        load_config(None, ["model.hidden_units=[4096, 4096]", f"train.batch_size={fits}"]), memory=memory
    )
    with pytest.raises(UserError):  # the largest that fits
        check_fits(
            load_config(None, ["model.hidden_units=[4096, 4096]", f"train.batch_size={fits + 1}"]), memory
        )


def test_a_config_piped_in_is_read_once_with_a_flag_beside_it():
    """`--config <(cmd) --epochs 1` read the pipe twice (the second time empty) and trained the defaults."""
    import os

    from mnist_mlp.planning import plan

    read, write = os.pipe()
    os.write(write, b"[model]\nhidden_units = [64]\n[train]\nepochs = 5\n")
    os.close(write)
    try:
        config, _ = plan(f"/dev/fd/{read}", [], {"epochs": 1}, None, None)
    finally:
        os.close(read)
    assert config.model.hidden_units == (64,) and config.train.epochs == 1


def test_a_run_trained_with_deformations_past_todays_bounds_still_reads_back(tmp_path):
    """The bounds apply to what is trained from now on: a run that holds translation 5 is still a run."""
    from mnist_mlp.config import config_to_toml
    from mnist_mlp.fits import check_fits

    config = load_config(None, ["augment.translation=5"])  # reads: a run's config.toml may hold it
    assert load_config(_written(tmp_path, config_to_toml(config))).augment.translation == 5
    with pytest.raises(UserError, match="augment.translation must be <= 4 pixels"):
        check_fits(config)  # not trained again as it is


def _written(folder, text):
    (folder / "config.toml").write_text(text)
    return folder / "config.toml"
