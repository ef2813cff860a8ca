"""Evaluation of a finished run on the test set: loss, accuracy with its interval, per-class precision
and recall, the confusion matrix, and a gallery of the most confidently wrong digits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from mnist_mlp import data, outputs, plots, runs, stats
from mnist_mlp.errors import Fix, UserError, WriteFailed
from mnist_mlp.model import NUM_CLASSES
from mnist_mlp.runs import load_model


@dataclass(frozen=True)
class EvalResult:
    run_dir: Path
    test_loss: float
    test_accuracy: float
    ci95: tuple[float, float]
    confusion: np.ndarray  # int (10, 10): rows true digit, columns predicted digit
    precision: tuple[float, ...]  # per predicted digit
    recall: tuple[float, ...]  # per true digit: the class's accuracy
    support: tuple[int, ...]  # test images per true digit
    wrong: int
    source: str = "mnist"  # the images scored: MNIST's test set, or otherdigits' (then no files written)
    unread: tuple[str, ...] = ()  # an error line for each of a folder's images that could not be read
    no_digit: tuple[str, ...] = ()  # a line for each of a folder's images with no digit found (not scored)
    not_written: WriteFailed | None = None  # why the figures and evaluation.json were not written
    committee: int = 1  # runs whose mean probabilities were scored (more than 1: no files written)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def evaluate(
    run: runs.Run | str | Path | list,
    data_dir: str | Path | None = None,
    gallery_size: int = 25,
    on: str = "mnist",
) -> EvalResult:
    """Score a run's model (a loaded Run, or its folder) on the 10,000 test images, writing confusion.png,
    misclassified.png and evaluation.json into the run directory; or, `on` another source of digits (see
    otherdigits), only score it. A list of runs: a committee, scored by the mean of their probabilities."""
    committee = runs.load_committee(run if isinstance(run, list) else [run])
    run = committee[0]
    loaded = outputs.stamp(run.model_path)
    models = [load_model(r) for r in committee]  # first: a swapped or corrupt model is the error to report
    if on == "mnist":
        images, labels, unread, no_digit = *data.load_split("test", data_dir), [], []
    else:
        from mnist_mlp import otherdigits

        images, labels, unread, no_digit = otherdigits.load(on, data_dir)
        images = np.stack(images)
    x = data.preprocess(images)
    probabilities = np.mean([np.asarray(m.predict(x, batch_size=1024, verbose=0)) for m in models], axis=0)
    result = _score(probabilities, labels, run.path, on, unread, no_digit)
    if on != "mnist" or len(models) > 1:
        return dataclasses.replace(result, committee=len(models))
    if outputs.stamp(run.model_path) != loaded:  # `train --out RUN --overwrite` meanwhile: not its results
        raise UserError(
            f"{run.path} was trained again while it was being evaluated, so nothing was written",
            Fix("evaluate-again", run.path, lead="evaluate it again once it has finished:"),
        )
    return _write_diagnosis(result, images, labels, probabilities, gallery_size)


def _score(probabilities, labels, path: Path, on: str, unread, no_digit) -> EvalResult:
    """Loss, accuracy with its interval, the confusion matrix and each digit's precision and recall."""
    loss, accuracy = _loss_and_accuracy(probabilities, labels)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels.astype(np.int64), predicted)
    correct = np.diag(matrix)
    precision = correct / np.maximum(matrix.sum(axis=0), 1)
    recall = correct / np.maximum(matrix.sum(axis=1), 1)
    return EvalResult(
        path,
        loss,
        accuracy,
        stats.wilson_interval(int(correct.sum()), len(labels)),
        matrix,
        tuple(precision.tolist()),
        tuple(recall.tolist()),
        tuple(matrix.sum(axis=1).tolist()),
        int((predicted != labels).sum()),
        on,
        tuple(unread),
        tuple(no_digit),
    )


def _write_diagnosis(result: EvalResult, images, labels, probabilities, gallery_size: int) -> EvalResult:
    """confusion.png, misclassified.png (the most confident mistakes first) and evaluation.json in the run;
    `result` with what could not be written."""
    path, matrix = result.run_dir, result.confusion
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    worst = wrong[np.argsort(-confidence)][:gallery_size]
    titles = [
        f"true {labels[i]}, said {predicted[i]}\n{probabilities[i, predicted[i]]:.1%}, test #{i}"
        for i in worst
    ]
    try:
        plots.plot_confusion(matrix, path / runs.CONFUSION)
        plots.plot_gallery(images[worst], titles, path / runs.MISCLASSIFIED)
        outputs.write_json(
            path / runs.EVALUATION,
            {
                "test_loss": result.test_loss,
                "test_accuracy": result.test_accuracy,
                "test_accuracy_ci95": list(result.ci95),
                "confusion": matrix.tolist(),
                "precision": list(result.precision),
                "recall": list(result.recall),
                "support": list(result.support),
                "misclassified": worst.tolist(),
                "backend": keras.backend.backend(),
            },
        )
    except WriteFailed as e:  # a run folder shared read-only, a full disk: the scores are still worth showing
        unsaved = WriteFailed(
            f"{e}; the scores above are not saved", e.errno, fix=Fix("evaluate-again", path, e.errno)
        )
        return dataclasses.replace(result, not_written=unsaved)
    return result


def _loss_and_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Categorical cross-entropy as Keras computes it (probabilities clipped to [1e-7, 1 - 1e-7]) and
    accuracy."""
    p = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1 - 1e-7)
    return float(-np.log(p).mean()), float((probabilities.argmax(axis=1) == labels).mean())


def describe(result: EvalResult) -> str:
    """`mnist-mlp evaluate`'s report: score, per-digit precision and recall, the confusion matrix."""
    low, high = result.ci95
    loss, accuracy = (
        ("Test loss", "Test accuracy")
        if result.source == "mnist"
        else (f"Loss on {result.source}", f"Accuracy on {result.source}")
    )
    lines = [
        f"{loss}: {result.test_loss:.4f}",
        f"{accuracy}: {result.test_accuracy:.4f} (95% interval {low:.4f}-{high:.4f}), "
        f"{result.wrong} of {sum(result.support)} wrong"
        + (f"; {len(result.no_digit)} more with no digit found were not scored" if result.no_digit else ""),
        "",
        "digit  precision  recall(accuracy)  images",
    ]
    said = result.confusion.sum(axis=0)  # a digit never said, or with no images, has no precision or recall
    lines += [
        f"{d:>5}  {f'{p:.4f}' if said[d] else '-':>9}  {f'{r:.4f}' if n else '-':>16}  {n:>6}"
        for d, (p, r, n) in enumerate(zip(result.precision, result.recall, result.support))
    ]
    lines += [
        "",
        "confusion matrix (rows: true digit, columns: predicted)",
        "      " + "".join(f"{d:>6}" for d in range(10)),
    ]
    lines += [f"{d:>6}" + "".join(f"{n:>6}" for n in row) for d, row in enumerate(result.confusion)]
    if result.committee > 1:
        lines.insert(
            0, f"A committee of {result.committee} runs (the mean of their probabilities; nothing written):"
        )
    elif result.source == "mnist" and not result.not_written:
        lines += ["", f"Wrote confusion.png, misclassified.png and evaluation.json in {result.run_dir}/"]
    return "\n".join(lines)
