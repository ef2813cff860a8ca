"""Deforming training digits on the device, as the best plain MLPs were trained (Simard 2003, Ciresan 2010):
a random affine map (rotation, scale, shear, translation) and an elastic field (random displacements
smoothed by a Gaussian), then a stroke grown or thinned (pens, phones and fonts draw wider or finer lines than
MNIST's), a fresh draw for every image at every step from a JAX key. JAX only."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mnist_mlp.config import AugmentConfig
from mnist_mlp.errors import UserError

SIDE = 28  # MNIST's images are 28 x 28


def gaussian_matrix(sigma: float, side: int = SIDE) -> np.ndarray:
    """(side, side) rows of a Gaussian of `sigma` pixels, each summing to 1: G @ f @ G.T smooths a field f."""
    offsets = np.arange(side)[:, None] - np.arange(side)[None, :]
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def deform(key: jax.Array, images: jax.Array, config: AugmentConfig) -> jax.Array:
    """`images` (n, 784) float in [0, 1], each moved by its own random affine map and elastic field; the
    same shape back. Where a moved pixel comes from outside the image, it is background (0)."""
    n = images.shape[0]
    k_rot, k_scale, k_shear, k_shift, k_field = jax.random.split(key, 5)
    angle = jnp.deg2rad(config.rotation) * jax.random.uniform(k_rot, (n,), minval=-1, maxval=1)
    scale = 1 + config.scale * jax.random.uniform(k_scale, (n, 2), minval=-1, maxval=1)  # y and x apart
    shear = jnp.deg2rad(config.shear) * jax.random.uniform(k_shear, (n,), minval=-1, maxval=1)
    shift = config.translation * jax.random.uniform(k_shift, (n, 2), minval=-1, maxval=1)
    cos, sin, tan = jnp.cos(angle), jnp.sin(angle), jnp.tan(shear)
    # Output pixel p samples the input at A @ (p - centre) + centre - shift: A rotates, shears and scales.
    a = jnp.stack([jnp.stack([cos, -sin + tan * cos], -1), jnp.stack([sin, cos + tan * sin], -1)], -2)
    a = a / scale[:, :, None]
    centre = (SIDE - 1) / 2
    ys, xs = jnp.meshgrid(
        jnp.arange(SIDE, dtype=jnp.float32) - centre,
        jnp.arange(SIDE, dtype=jnp.float32) - centre,
        indexing="ij",
    )
    grid = jnp.stack([ys, xs])  # (2, 28, 28)
    where = jnp.einsum("nij,jhw->nihw", a, grid) + centre - shift[:, :, None, None]
    if config.elastic_alpha > 0:
        smooth = jnp.asarray(gaussian_matrix(config.elastic_sigma))
        field = jax.random.uniform(k_field, (n, 2, SIDE, SIDE), minval=-1, maxval=1)
        # Simard's convention: uniform(-1, 1) fields smoothed by a unit-mass Gaussian, times alpha (pixels);
        # sigma 5, alpha 36 moves a pixel by about 1.2 px (RMS), smoothly.
        where = where + config.elastic_alpha * jnp.einsum("ij,ncjk,lk->ncil", smooth, field, smooth)
    sample = jax.vmap(
        lambda image, at: jax.scipy.ndimage.map_coordinates(
            image, [at[0], at[1]], order=1, mode="constant", cval=0.0
        )
    )
    moved = sample(images.reshape(n, SIDE, SIDE), where)
    if config.stroke > 0:  # its own key (not a sixth split): the other deformations draw as before
        moved = restroke(jax.random.fold_in(key, 6), moved, config.stroke)
    return moved.reshape(n, SIDE * SIDE)


def restroke(key: jax.Array, images: jax.Array, stroke: float) -> jax.Array:
    """`images` (n, 28, 28) in [0, 1], each one's strokes grown (grey-level dilation: the 3x3 maximum) or
    thinned (erosion: the 3x3 minimum) by its own fraction t of a pixel, t drawn from [-stroke, stroke]: a
    blend of the image and its filtered self, so the result stays in [0, 1] and ink moves at most a pixel."""
    t = stroke * jax.random.uniform(key, (images.shape[0], 1, 1), minval=-1, maxval=1)

    def window(init, op):
        return jax.lax.reduce_window(images, init, op, (1, 3, 3), (1, 1, 1), "SAME")

    grown, thinned = window(-jnp.inf, jax.lax.max), window(jnp.inf, jax.lax.min)
    return images + jnp.maximum(t, 0) * (grown - images) + jnp.maximum(-t, 0) * (thinned - images)


def preview(
    config: AugmentConfig,
    out: str | Path,
    data_dir: str | Path | None = None,
    digits: int = 6,
    versions: int = 7,
    seed: int = 0,
) -> Path:
    """A PNG grid: `digits` training images (rows), as stored and then as `versions` deformations each, as
    the model sees them while training with `config`."""
    from mnist_mlp import data, plots

    if not config.active:
        raise UserError(
            "the config deforms nothing (every [augment] value is 0); add e.g. "
            "--set augment.elastic_alpha=36 --set augment.rotation=10"
        )
    images, labels = data.load_split("train", data_dir)
    x = jnp.asarray(data.preprocess(images[:digits]))
    keys = jax.random.split(jax.random.key(seed), versions)
    moved = [np.asarray(deform(key, x, config)) for key in keys]
    grid = np.stack([x, *moved], axis=1).reshape(-1, SIDE, SIDE)  # row per digit: original, then versions
    titles = [f"{labels[i]}" if v == 0 else "" for i in range(digits) for v in range(versions + 1)]
    return plots.plot_gallery((grid * 255).astype(np.uint8), titles, out, columns=versions + 1)
