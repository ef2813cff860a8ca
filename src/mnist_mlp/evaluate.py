"""Evaluation of a finished run on the test set: loss, accuracy with its interval, per-class precision
and recall, the confusion matrix, and a gallery of the most confidently wrong digits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from mnist_mlp import data, plots, runs, stats
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


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def evaluate(run: runs.Run | str | Path, data_dir: str | Path | None = None, gallery_size: int = 25) -> EvalResult:
    """Score a run's model (a loaded Run, or its folder) on the 10,000 test images; writes confusion.png,
    misclassified.png and evaluation.json into the run directory."""
    run = run if isinstance(run, runs.Run) else runs.load_run(run)
    model = load_model(run)
    x_test, y_test = data.load_split("test", data_dir)
    probabilities = np.asarray(model.predict(data.preprocess(x_test), batch_size=1024, verbose=0))
    test_loss, test_accuracy = _loss_and_accuracy(probabilities, y_test)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_test.astype(np.int64), predicted)
    correct = np.diag(matrix)
    precision = correct / np.maximum(matrix.sum(axis=0), 1)
    recall = correct / np.maximum(matrix.sum(axis=1), 1)

    wrong = np.flatnonzero(predicted != y_test)
    confidence = probabilities[wrong, predicted[wrong]]
    worst = wrong[np.argsort(-confidence)][:gallery_size]
    titles = [f"true {y_test[i]}, said {predicted[i]}\n{probabilities[i, predicted[i]]:.1%}, test #{i}" for i in worst]
    plots.plot_confusion(matrix, run.path / runs.CONFUSION)
    plots.plot_gallery(x_test[worst], titles, run.path / runs.MISCLASSIFIED)

    result = EvalResult(run.path, test_loss, test_accuracy, stats.wilson_interval(int(correct.sum()), len(y_test)),
                        matrix, tuple(precision.tolist()), tuple(recall.tolist()),
                        tuple(matrix.sum(axis=1).tolist()), len(wrong))
    runs.write_json(run.path / runs.EVALUATION, {
        "test_loss": test_loss, "test_accuracy": test_accuracy, "test_accuracy_ci95": list(result.ci95),
        "confusion": matrix.tolist(), "precision": list(result.precision), "recall": list(result.recall),
        "support": list(result.support), "misclassified": worst.tolist(), "backend": keras.backend.backend(),
    })
    return result


def _loss_and_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Categorical cross-entropy as Keras computes it (probabilities clipped to [1e-7, 1 - 1e-7]) and accuracy."""
    p = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1 - 1e-7)
    return float(-np.log(p).mean()), float((probabilities.argmax(axis=1) == labels).mean())


def describe(result: EvalResult) -> str:
    """`mnist-mlp evaluate`'s report: score, per-digit precision and recall, the confusion matrix."""
    low, high = result.ci95
    lines = [f"Test loss: {result.test_loss:.4f}",
             f"Test accuracy: {result.test_accuracy:.4f} (95% interval {low:.4f}-{high:.4f}), "
             f"{result.wrong} of {sum(result.support)} wrong", "", "digit  precision  recall(accuracy)  images"]
    lines += [f"{d:>5}  {p:>9.4f}  {r:>16.4f}  {n:>6}"
              for d, (p, r, n) in enumerate(zip(result.precision, result.recall, result.support))]
    lines += ["", "confusion matrix (rows: true digit, columns: predicted)", "      " + "".join(f"{d:>6}" for d in range(10))]
    lines += [f"{d:>6}" + "".join(f"{n:>6}" for n in row) for d, row in enumerate(result.confusion)]
    lines += ["", f"Wrote confusion.png, misclassified.png and evaluation.json in {result.run_dir}/"]
    return "\n".join(lines)
