"""Figures from run data: training curves (one run or several overlaid), the confusion matrix, a gallery of
digits and a first layer's weights as images. matplotlib's Agg backend; never Keras."""

from __future__ import annotations

import logging
import math
from pathlib import Path

# Where HOME is read-only, matplotlib uses a temporary config folder and says so in two lines that a user of
# this tool can do nothing about: dropped, before matplotlib is imported. Its other warnings stay.
logging.getLogger("matplotlib").addFilter(
    lambda record: "MPLCONFIGDIR" not in record.getMessage() and "mkdir -p failed" not in record.getMessage()
)

import matplotlib  # noqa: E402
import matplotlib.ticker  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mnist_mlp import outputs, runs  # noqa: E402
from mnist_mlp.errors import UserError  # noqa: E402
from mnist_mlp.outputs import atomic  # noqa: E402

FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")  # by the name's suffix (none: png)


def _save(fig, path: str | Path) -> Path:
    """PNG, or the format the name asks for where matplotlib writes it (curves.pdf or .svg for a slide)."""
    try:
        kind = _kind(path)
    except UserError:
        plt.close(fig)
        raise
    with atomic(path) as tmp:
        fig.savefig(tmp, format=kind, dpi=110, bbox_inches="tight", **_mark(kind))
    plt.close(fig)
    return Path(path)


def _kind(path: str | Path) -> str:
    kind = Path(path).suffix.lower().lstrip(".") or "png"
    if kind not in FORMATS:
        raise UserError(
            f"{path}: figures are written as {', '.join(FORMATS)}; give a name ending in one of them"
        )
    return kind


def _mark(kind: str) -> dict:
    """savefig's arguments that put MADE_BY in the file, so that --out knows it as ours."""
    if kind in ("jpg", "jpeg"):
        return {"pil_kwargs": {"comment": outputs.MADE_BY}}
    return {"metadata": {"Software" if kind == "png" else "Creator": outputs.MADE_BY}}


def save_axes(axes, path: str | Path) -> Path:
    """Save the figure holding matplotlib `axes` (as Optuna's plots return them)."""
    return _save(axes.figure if hasattr(axes, "figure") else axes.flat[0].figure, path)


def plot_curves(histories: dict[str, dict[str, list[float]]], path: str | Path) -> Path:
    """Loss and accuracy per epoch, training (solid) vs validation (dashed); one colour per run."""
    return _save(curves_figure(histories), path)


def curves_figure(histories: dict[str, dict[str, list[float]]]):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, history) in enumerate(histories.items()):
        color = f"C{i}"
        epochs = [int(e) + 1 for e in history.get("epoch", range(len(history["loss"])))]
        prefix = f"{name} " if len(histories) > 1 else ""
        for ax, metric in zip(axes, ("loss", "accuracy")):
            ax.plot(epochs, history[metric], color=color, marker=".", label=f"{prefix}training")
            if f"val_{metric}" in history:
                ax.plot(
                    epochs,
                    history[f"val_{metric}"],
                    color=color,
                    linestyle="--",
                    marker=".",
                    label=f"{prefix}validation",
                )
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def plot_mean_band(histories: list[dict[str, list[float]]], path: str | Path, label: str = "") -> Path:
    """Mean curve over several runs (seeds) with a band of ± one standard deviation."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for i, key in enumerate((metric, f"val_{metric}")):
            if key not in histories[0]:
                continue
            values = np.array([h[key] for h in histories])
            mean, std = values.mean(axis=0), values.std(axis=0, ddof=1) if len(values) > 1 else 0 * values[0]
            epochs = np.arange(1, values.shape[1] + 1)
            name = "training" if i == 0 else "validation"
            ax.plot(epochs, mean, color=f"C{i}", label=f"{label}{name} (mean of {len(values)})")
            ax.fill_between(epochs, mean - std, mean + std, color=f"C{i}", alpha=0.25)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}, mean ± std over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_confusion(confusion: np.ndarray, path: str | Path) -> Path:
    """Counts of (true, predicted) pairs, annotated."""
    fig, ax = plt.subplots(figsize=(6.5, 6))
    shown = np.log1p(confusion)  # log scale so the few mistakes stay visible beside ~1000 correct
    ax.imshow(shown, cmap="Blues")
    for (t, p), count in np.ndenumerate(confusion):
        ax.text(
            p,
            t,
            str(count),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if shown[t, p] > shown.max() / 2 else "black",
        )
    ax.set_xticks(range(len(confusion)))
    ax.set_yticks(range(len(confusion)))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title("confusion matrix (test set)")
    return _save(fig, path)


def plot_gallery(images: np.ndarray, titles: list[str], path: str | Path, columns: int = 5) -> Path:
    """Digits (n, 28, 28) in a grid, each with its title."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.8, rows * 2.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(title, fontsize=8)
    return _save(fig, path)


def weights_mosaic(kernel: np.ndarray, scale: int = 2) -> np.ndarray:
    """A first layer's weights (784, units) as one image: a 28x28 tile per unit (each on its own scale,
    -1..1), tiles in rows about twice as long as the columns are tall, NaN (drawn white) between tiles and
    after the last."""
    units = kernel.shape[1]
    columns = math.ceil(math.sqrt(2 * units))  # 512 units: 32 x 16
    rows = math.ceil(units / columns)
    peak = np.abs(kernel).max(axis=0)
    tiles = np.full((rows * columns, 28, 28), np.nan)
    tiles[:units] = (kernel / np.where(peak > 0, peak, 1)).T.reshape(units, 28, 28)
    tiles = np.pad(tiles, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)  # a white line around each tile
    mosaic = tiles.reshape(rows, columns, 30, 30).transpose(0, 2, 1, 3).reshape(rows * 30, columns * 30)
    return mosaic.repeat(scale, axis=0).repeat(scale, axis=1)


def plot_weights(kernel: np.ndarray, path: str | Path) -> Path:
    """What each first-layer unit looks for: red where ink raises its output, blue where ink lowers it."""
    kind = _kind(path)
    colours = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    with atomic(path) as tmp:
        plt.imsave(tmp, weights_mosaic(kernel), cmap=colours, vmin=-1, vmax=1, format=kind, **_mark(kind))
    return Path(path)


def plot_run_weights(run: str | Path, kernel: np.ndarray, out: str | Path | None = None) -> Path:
    """plot_weights into `out`, else RUN/weights.png."""
    if out:
        outputs.check_target(Path(out), "--out", runs.WEIGHTS)
    return plot_weights(kernel, out or Path(run) / runs.WEIGHTS)


def plot_runs(paths: list[str | Path], out: str | Path | None = None) -> tuple[Path, str]:
    """Curves of one run, several overlaid (named in the legend), or a seed group's mean ± std band.
    Written to `out`, else RUN/curves.png for one run or group, else ./curves.png (curves-2.png, ... if a file
    has that name); (path, a note)."""
    if out:
        outputs.check_target(Path(out), "--out", runs.CURVES)  # a link or a device is refused, not replaced
    if len(paths) == 1 and (Path(paths[0]) / runs.GROUP).exists():  # a train --seeds folder
        group, loaded = runs.load_group(paths[0])
        out = plot_mean_band([run.history for run in loaded], out or Path(paths[0]) / runs.CURVES)
        return out, f"mean ± std over seeds {', '.join(map(str, group['seeds']))}"
    loaded = [runs.load_run(path) for path in paths]
    if len(loaded) == 1:
        return plot_curves(named_histories(loaded), out or loaded[0].path / runs.CURVES), ""
    with outputs.output(out, "curves.png", ".png") as out:
        return plot_curves(named_histories(loaded), out), ""


def named_histories(loaded: list[runs.Run]) -> dict[str, dict[str, list[float]]]:
    """Run histories by name; the full path where two runs share a name."""
    names = [run.name for run in loaded]
    return {(run.name if names.count(run.name) == 1 else str(run.path)): run.history for run in loaded}
