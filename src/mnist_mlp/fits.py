"""What a config may train here, checked before anything is allocated: deformations within the papers'
bounds, a batch no larger than the data, and a model whose training fits this machine's memory."""

from __future__ import annotations

import dataclasses
import os

from mnist_mlp.config import HELD_OUT, TRAIN_IMAGES, AugmentConfig, Config, TrainConfig, check_key
from mnist_mlp.errors import UserError


def training_images(config: TrainConfig) -> int:
    """How many images an epoch trains on."""
    available = TRAIN_IMAGES - (HELD_OUT if config.validation == "split" else 0)
    return min(config.train_samples, available) if config.train_samples else available


def memory_needed(config: Config) -> int:
    """Bytes that training takes, roughly: the parameters five times (weights, gradients, two optimizer slots,
    a checkpoint copy), one batch's activations four times (forward, masks, backward), the data twice."""
    sizes = (784, *config.model.hidden_units, 10)  # pixels in, digits out
    parameters = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    activations = config.train.batch_size * sum(sizes)
    images = (TRAIN_IMAGES + 10_000) * (784 + 10)  # float32 pixels and one-hot labels, train and test
    return 4 * (5 * parameters + 4 * activations + 2 * images)  # float32: 4 bytes


def check_deformations(augment: AugmentConfig) -> None:
    """A UserError for deformations that destroy the digits, bounded near what the papers used (Simard 2003;
    Ciresan 2010: rotation up to 15 degrees, scaling 15-20%, elastic alpha 34-38 with sigma 4-6) and by
    MNIST's margin: checked before training or a preview, not when a run is read back."""
    check_key(augment.rotation <= 30, "augment.rotation", "must be <= 30 degrees (Ciresan 2010: up to 15)")
    check_key(augment.scale <= 0.4, "augment.scale", "must be <= 0.4 (Ciresan 2010: 0.15-0.2)")
    check_key(augment.shear <= 30, "augment.shear", "must be <= 30 degrees (record-cpu: 8)")
    check_key(
        augment.translation <= 4, "augment.translation", "must be <= 4 pixels (MNIST's margin around a digit)"
    )
    check_key(
        augment.elastic_alpha <= 80,
        "augment.elastic_alpha",
        "must be <= 80 (Simard 2003: 34; Ciresan 2010: 36-38)",
    )
    check_key(
        augment.elastic_sigma >= 3,
        "augment.elastic_sigma",
        "must be in [3, 28] pixels (Simard 2003: 4; a smaller one makes noise that tears a digit apart)",
    )


def check_fits(config: Config, memory: int | None = None) -> None:
    """A UserError, before anything is allocated, for deformations that destroy the digits, a batch larger
    than the data, or a model whose training would not fit in `memory` bytes (default: this machine's RAM)."""
    check_deformations(config.augment)
    images, batch = training_images(config.train), config.train.batch_size
    available = training_images(dataclasses.replace(config.train, train_samples=0))
    left = " left by --validation split" if available < TRAIN_IMAGES else ""
    check_key(
        config.train.train_samples <= available,
        "train.train_samples",
        f"{config.train.train_samples} is more than the {available:,} training images{left}; "
        f"use at most {available} (0: all)",
    )
    check_key(
        batch <= images,
        "train.batch_size",
        f"{batch} is larger than the {images:,} training images; use at most {images}",
    )
    try:
        memory = memory or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no way to tell here: let the allocator decide
        return
    needed, room = memory_needed(config), 0.8 * memory  # leave room for Python, Keras and the OS
    if needed > room:
        one = memory_needed(_with_batch(config, 1))
        per_image = memory_needed(_with_batch(config, 2)) - one
        fits = int((room - one) // per_image) + 1 if room >= one else 0  # the largest batch that fits
        fix = (
            f"use fewer or narrower layers, or train.batch_size {fits} or less"
            if fits >= 1
            else "use fewer or narrower layers (no batch size fits this model)"
        )
        raise UserError(
            f"training this model would take about {needed / 2**30:,.1f} GiB (model.hidden_units "
            f"{list(config.model.hidden_units)}, batch {batch}) and this machine has "
            f"{memory / 2**30:.1f} GiB; {fix}"
        )


def _with_batch(config: Config, batch_size: int) -> Config:
    return dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=batch_size))
