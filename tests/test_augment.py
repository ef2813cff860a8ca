"""Deformed training digits: identity when off, displacements bounded as configured, a fresh but
reproducible draw per key, and training with them repeatable and exactly resumable."""

import os
import stat

import jax
import numpy as np
import pytest
from conftest import ctrl_c_after_epoch

from mnist_mlp import runs, train
from mnist_mlp.augment import deform, gaussian_matrix, restroke
from mnist_mlp.cli import main
from mnist_mlp.config import AugmentConfig

DEFORM = [
    "--set",
    "augment.rotation=10",
    "--set",
    "augment.elastic_alpha=36",
    "--set",
    "augment.translation=2",
    "--set",
    "augment.stroke=0.5",
]
SMALL = ["--train-samples", "512", "--epochs", "3", "--set", "model.hidden_units=[32]"]


def _centre(images):
    """Centre of mass (y, x) of each (28, 28) image."""
    ys, xs = np.indices((28, 28))
    mass = images.sum(axis=(1, 2))
    return np.stack([(images * ys).sum(axis=(1, 2)) / mass, (images * xs).sum(axis=(1, 2)) / mass], axis=1)


@pytest.fixture(scope="module")
def blobs():
    """Eight small blobs well inside the frame, as (8, 784) float32."""
    images = np.zeros((8, 28, 28), np.float32)
    for i, (y, x) in enumerate(
        [(10, 10), (14, 14), (17, 9), (9, 17), (12, 15), (16, 16), (13, 10), (15, 12)]
    ):
        images[i, y - 2 : y + 3, x - 2 : x + 3] = 1.0
    return images.reshape(8, 784)


def test_off_is_the_identity(blobs):
    out = np.asarray(deform(jax.random.key(0), blobs, AugmentConfig()))
    np.testing.assert_array_equal(out, blobs)
    assert not AugmentConfig().active and AugmentConfig(elastic_alpha=1).active


@pytest.mark.parametrize(
    "config, bound, least",
    [
        (AugmentConfig(translation=2), 2.0, 1.0),  # each axis within [-2, 2] pixels; 64 draws reach past 1
        (
            AugmentConfig(elastic_alpha=3, elastic_sigma=4),
            3.0,
            0.05,
        ),  # the smoothed field lies in [-1, 1], times alpha
    ],
)
def test_displacement_is_bounded_as_configured(config, bound, least, blobs):
    moved = np.asarray(deform(jax.random.key(1), np.repeat(blobs, 8, axis=0), config)).reshape(-1, 28, 28)
    shift = np.abs(_centre(moved) - _centre(np.repeat(blobs, 8, axis=0).reshape(-1, 28, 28)))
    assert least < shift.max() <= bound + 0.05  # it moves, and no farther than allowed


def test_rotation_keeps_the_digit_and_its_centre(blobs):
    digit = np.zeros((1, 28, 28), np.float32)
    digit[0, 6:22, 13:15] = 1.0  # a straight "1" through the centre
    turned = np.asarray(
        deform(jax.random.key(2), np.repeat(digit.reshape(1, 784), 16, axis=0), AugmentConfig(rotation=30))
    ).reshape(-1, 28, 28)
    np.testing.assert_allclose(_centre(turned), [[13.5, 13.5]] * 16, atol=0.3)
    np.testing.assert_allclose(turned.sum(axis=(1, 2)), digit.sum(), rtol=0.05)  # ink kept, nothing cut off
    assert len({round(float(np.abs(t - digit[0]).sum()), 3) for t in turned}) == 16  # a different angle each


def test_a_key_gives_one_draw_and_another_key_another(blobs):
    config = AugmentConfig(rotation=10, scale=0.1, shear=5, translation=2, elastic_alpha=36)
    first, again, other = (np.asarray(deform(jax.random.key(k), blobs, config)) for k in (7, 7, 8))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.1


def test_stroke_width_is_off_by_default_bounded_and_drawn_per_key(blobs):
    """Each image's strokes grow or thin by its own fraction of a pixel: ink stays in [0, 1] and within one
    pixel of where it was, some images get more ink and some less, and a key gives one draw."""
    np.testing.assert_array_equal(
        np.asarray(deform(jax.random.key(0), blobs, AugmentConfig(stroke=0))), blobs
    )
    assert AugmentConfig(stroke=0.5).active
    images = np.repeat(blobs, 8, axis=0).reshape(-1, 28, 28)
    out = np.asarray(restroke(jax.random.key(3), images, 1.0))
    assert out.min() >= 0 and out.max() <= 1
    near = np.zeros_like(images, bool)  # the ink's own pixels and their 8 neighbours
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= np.roll(np.roll(images > 0, dy, axis=1), dx, axis=2)
    assert not out[~near].any()
    change = out.sum(axis=(1, 2)) - images.sum(axis=(1, 2))
    assert (change > 1).sum() > 5 and (change < -1).sum() > 5  # grown and thinned, each image its own
    again, other = (np.asarray(restroke(jax.random.key(k), images, 1.0)) for k in (3, 4))
    np.testing.assert_array_equal(out, again)
    assert np.abs(out - other).max() > 0.1
    moved = AugmentConfig(rotation=10, elastic_alpha=36)  # the other deformations draw as without a stroke
    with_stroke = AugmentConfig(rotation=10, elastic_alpha=36, stroke=1.0)
    plain = np.asarray(deform(jax.random.key(5), blobs, moved)).reshape(-1, 28, 28)
    stroked = np.asarray(deform(jax.random.key(5), blobs, with_stroke)).reshape(-1, 28, 28)
    np.testing.assert_allclose(
        stroked, np.asarray(restroke(jax.random.fold_in(jax.random.key(5), 6), plain, 1.0))
    )


def test_the_smoothing_matrix_is_a_gaussian_of_sigma_pixels():
    """Row by row a Gaussian of `sigma` pixels (its falloff and its spread), each of unit mass."""
    smooth = gaussian_matrix(2.0)
    row = smooth[14]
    d = np.arange(1, 6)
    np.testing.assert_allclose(row[14 + d] / row[14], np.exp(-(d**2) / (2 * 2.0**2)), rtol=1e-5)
    spread = np.sqrt((row * (np.arange(28) - 14) ** 2).sum() / row.sum())
    assert abs(spread - 2.0) < 0.01
    np.testing.assert_allclose(smooth.sum(axis=1), 1, rtol=1e-5)


def test_training_with_deformations_repeats_resumes_and_differs(synthetic_dir, tmp_path, capsys, monkeypatch):
    cache = ["--cache-dir", str(synthetic_dir)]
    for name, extra in (("a", DEFORM), ("b", DEFORM), ("plain", [])):
        assert main(["train", *SMALL, *extra, "--out", str(tmp_path / name), *cache]) == 0
    history = {name: (tmp_path / name / runs.HISTORY).read_text() for name in ("a", "b", "plain")}
    assert history["a"] == history["b"] and history["a"] != history["plain"]
    assert runs.load_run(tmp_path / "a").config.augment.elastic_alpha == 36

    stopped = ["train", *SMALL, *DEFORM, "--set", "train.checkpoint_seconds=0", "--out", str(tmp_path / "s")]
    with monkeypatch.context() as patch:
        patch.setattr(train.Checkpoint, "on_epoch_end", ctrl_c_after_epoch(1))
        assert main([*stopped, *cache]) == 130
    assert main(["train", "--resume", str(tmp_path / "s"), *cache]) == 0
    assert (tmp_path / "s" / runs.HISTORY).read_text() == history["a"]  # the same deformations after resume


def test_keras_fit_refuses_deformations_in_one_line(tmp_path, capsys):
    assert main(["train", *SMALL, *DEFORM, "--engine", "fit", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "compiled engine" in err and err.count("\n") == 1 and not (tmp_path / "r").exists()


def _preview(out, cache_dir) -> int:
    """`inspect --augment` with DEFORM into `out`: its exit code."""
    return main(["inspect", "--augment", *DEFORM, "--out", str(out), "--cache-dir", str(cache_dir)])


def test_inspect_augment_draws_the_grid(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert _preview(out, synthetic_dir) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and str(out) in capsys.readouterr().out
    assert main(["inspect", "--augment", "--out", str(out), "--cache-dir", str(synthetic_dir)]) == 2
    assert "deforms nothing" in capsys.readouterr().err


def test_an_output_that_is_not_a_plain_file_is_refused_untouched(synthetic_dir, tmp_path, capsys):
    """`--out /dev/full` (as root) became a 54 KB PNG, a symbolic link was replaced by a file, `--out .` was a
    traceback: the rename that writes an output replaced whatever had the name."""
    target, link, pipe = tmp_path / "target.png", tmp_path / "link.png", tmp_path / "pipe.png"
    target.write_bytes(b"mine: notes on mnist-mlp")  # naming the tool is not our mark
    link.symlink_to(target)
    os.mkfifo(pipe)
    cases = (
        (link, "is a symbolic link, which writing would replace"),
        (pipe, "is a device or pipe"),
        (tmp_path, f"is a folder; give a file name, e.g. --out {tmp_path / 'augment.png'}"),
        (
            target,
            f"is a file that mnist-mlp did not write, so it is not replaced; give another name, e.g. "
            f"--out {tmp_path / 'target-2.png'} (or move it away first)",
        ),
    )
    for out, said in cases:
        assert _preview(out, synthetic_dir) == 2
        err = capsys.readouterr().err
        assert f"--out {out} {said}" in err and err.count("\n") == 1, err
    assert (
        link.is_symlink()
        and target.read_bytes().startswith(b"mine")
        and stat.S_ISFIFO(os.lstat(pipe).st_mode)
    )
    missing = tmp_path / "figures" / "grid.png"
    assert _preview(missing, synthetic_dir) == 2
    assert (
        f"cannot write {missing} (No such file or directory); its folder does not exist: make it first, or "
        "give another path" in capsys.readouterr().err
    )
    missing.parent.mkdir()  # the advice, followed
    assert _preview(missing, synthetic_dir) == 0
    assert main(["bench", "--variants", "ours", "--epochs", "2", "--json", "."]) == 2  # before the bench runs
    assert "--json . is a folder; give a file name, e.g. --json bench.json" in capsys.readouterr().err
    assert (
        main(["bench", "--variants", "ours", "--epochs", "2", "--json", str(tmp_path / "no" / "b.json")]) == 2
    )
    assert "its folder does not exist; make it first" in capsys.readouterr().err


def test_an_output_named_pdf_or_svg_is_one(synthetic_dir, tmp_path, capsys):
    """--out grid.pdf wrote PNG bytes under that name (a teacher's slide wants a PDF or SVG). Each format
    carries our mark, so that writing it again replaces it (a file without the mark is refused, above)."""
    for name, start in (
        ("grid.pdf", b"%PDF"),
        ("grid.svg", b"<?xml"),
        ("grid.jpg", b"\xff\xd8"),
        ("grid", b"\x89PNG"),
    ):
        for _ in range(2):  # written, then written again
            assert _preview(tmp_path / name, synthetic_dir) == 0, capsys.readouterr().err
        assert (tmp_path / name).read_bytes().startswith(start), name
    assert (
        _preview(tmp_path / "grid.txt", synthetic_dir) == 2
    )  # PNG bytes under that name, or a LaTeX-only .pgf's traceback
    assert "figures are written as png, pdf, svg, jpg, jpeg" in capsys.readouterr().err
    assert not (tmp_path / "grid.txt").exists()
