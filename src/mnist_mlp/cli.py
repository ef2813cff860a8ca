"""The `mnist-mlp` command: each subcommand parses, calls one library function and prints what it returns.
Keras is imported only by the commands that need it, after the backend is chosen."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from mnist_mlp import advice, cache, data, experiments, outputs, planning, runs, signals, sources
from mnist_mlp.arguments import build_parser
from mnist_mlp.backend import use_backend
from mnist_mlp.config import load_config
from mnist_mlp.errors import Fix, Interrupted, UserError
from mnist_mlp.fits import check_deformations
from mnist_mlp.presets import config_line, config_name
from mnist_mlp.space import load_space


def cmd_data(args) -> None:
    if args.action == "fetch":
        info = sources.fetch(args.cache_dir)
    elif args.action == "import":
        info = data.import_data(args.paths, args.cache_dir)
    else:
        info = cache.data_info(args.cache_dir)
    print(cache.describe(info))
    if not info.complete:
        fetch, take = (
            advice.mnist("data fetch", "", args.cache_dir),
            advice.mnist("data import", "PATH", args.cache_dir),
        )
        print(f"Some files are missing or bad: run {fetch} or {take}.")


def cmd_inspect(args) -> None:
    if not args.augment:
        if args.config or args.set or args.out:
            raise UserError(
                "--config, --set and --out shape the --augment preview; add --augment, or drop them"
            )
        print(data.show_sample(args.split or "train", args.index or 0, args.cache_dir))
        return
    if args.split or args.index is not None:
        raise UserError(
            "--split and --index pick the digit to print; --augment draws its own grid of training digits: "
            "drop them"
        )
    config = load_config(args.config, args.set)
    check_deformations(config.augment)  # a preview of what would be trained
    if args.config:
        print(config_line(args.config))
    use_backend("jax")  # the deformations are JAX programs, as in the compiled engine
    from mnist_mlp import augment

    with (
        advice.written_to("--out", args.out, "augment.png"),
        outputs.output(args.out, "augment.png", ".png") as out,
    ):
        print(
            f"Wrote {augment.preview(config.augment, out, args.cache_dir)} (left: the training digit; right: "
            "deformed as the model sees it, a fresh draw every step)"
        )


def cmd_train(args) -> None:
    flags = {flag: getattr(args, flag.replace("-", "_")) for flag in planning.TRAIN_FLAGS}
    config, out = planning.plan(
        args.config, args.set, flags, args.resume, args.out, args.seeds, args.side_by_side
    )
    with planning.new_folder(out, args.config) as out:  # without --out, a new folder
        # A new run writes its config.toml when its folder is claimed
        before = outputs.stamp(out / runs.CONFIG)
        try:
            _train(args, config, out)
        except KeyboardInterrupt:
            if not args.resume and outputs.stamp(out / runs.CONFIG) == before:
                raise Interrupted(
                    "interrupted before training began; the same command starts again"
                ) from None
            raise Interrupted("interrupted", Fix("go-on", out)) from None


def _train(args, config, out: Path) -> None:
    choice = use_backend(config.backend)
    from mnist_mlp import seeds, train

    options = dict(
        data_dir=args.cache_dir,
        verbose=1 if sys.stdout.isatty() else 2,
        log=lambda text: print(text, flush=True),
    )
    if args.config and not args.resume:
        print(config_line(args.config))  # a file of that name, or the shipped preset
    if not args.resume:
        options["config_name"] = config_name(args.config)
    if args.resume and (out / runs.GROUP).is_file():
        group = seeds.resume_seeds(out, choice, **options)
    elif args.seeds:
        group = seeds.train_seeds(
            config,
            out,
            choice,
            args.seeds,
            overwrite=args.overwrite,
            side_by_side=args.side_by_side,
            **options,
        )
    else:
        result = train.train(
            config, out, choice, overwrite=args.overwrite, resume=bool(args.resume), **options
        )
        evaluate = advice.mnist("evaluate", outputs.shell_path(result.run_dir), args.cache_dir, quoted=False)
        print(train.describe(result, next_step=evaluate))
        return
    plot = advice.mnist("plot", outputs.shell_path(group.group_dir), quoted=False)
    print(seeds.describe_seeds(group, next_step=plot))


def cmd_evaluate(args) -> int:
    run = runs.load_committee(args.run)  # a missing, edited or repeated run fails before Keras starts
    if args.on != "mnist":
        from mnist_mlp import otherdigits

        for note in otherdigits.check(args.on, args.cache_dir):  # so does an unreadable --on
            print(f"mnist-mlp: note: {note}", file=sys.stderr)
    use_backend(args.backend)
    from mnist_mlp import evaluate

    result = evaluate.evaluate(run, args.cache_dir, on=args.on)
    print(evaluate.describe(result))
    for line in result.no_digit:
        print(f"mnist-mlp: note: {line} (not scored)", file=sys.stderr)
    for error in result.unread:
        print(f"mnist-mlp: error: {error} (skipped; the other images were scored)", file=sys.stderr)
    if result.not_written:
        print(f"mnist-mlp: error: {advice.line(result.not_written, args.cache_dir)}", file=sys.stderr)
    return 2 if result.unread or result.not_written else 0


def cmd_predict(args) -> int:
    from mnist_mlp import imagefiles, predict

    run, named = runs.load_run(args.run), imagefiles.image_files(args.images)
    for note in (imagefiles.left_out(Path(path)) for path in args.images if Path(path).is_dir()):
        if note:
            print(f"mnist-mlp: note: {note}", file=sys.stderr)
    files, prepared, errors = imagefiles.read_files(named)  # one unreadable file does not cost the others
    if args.csv:
        imagefiles.check_csv(args.csv, named)  # before Keras starts
    use_backend(args.backend)
    predictions = predict.predict_arrays(
        runs.load_model(run), [i for i, _ in prepared], [n for _, n in prepared]
    )
    # The CSV: a row for every file named, one not read with its error (a class's sheet lists every photo)
    if args.csv:
        unread = [path for path in named if path not in files]
        imagefiles.write_csv(imagefiles.as_rows(files, predictions), args.csv, list(zip(unread, errors)))
    print(
        json.dumps(imagefiles.as_rows(files, predictions), indent=2)
        if args.json
        else imagefiles.describe(files, predictions, args.show) + (f"\nWrote {args.csv}" if args.csv else "")
    )
    for error in errors:
        print(f"mnist-mlp: error: {error} (skipped; the other images were read)", file=sys.stderr)
    return 2 if errors else 0


def cmd_serve(args) -> None:
    runs.load_run(args.run)
    use_backend(args.backend)
    from mnist_mlp.serve import bind, serve, urls

    sock = bind(args.host, args.port)  # a port in use or out of range: one line, before the model loads
    where = urls(args.host, args.port)
    others = f" and {where[1]} from other machines" if len(where) > 1 else ""
    print(f"Loading {args.run} ...", flush=True)
    serve(
        args.run,
        sock=sock,
        ready=lambda: print(
            f"Serving on {where[0]}{others} (API docs at /docs, or /openapi.json offline); Ctrl-C stops",
            flush=True,
        ),
    )


def cmd_plot(args) -> None:
    from mnist_mlp import plots

    if args.weights:
        if len(args.runs) > 1:
            raise UserError("--weights draws one run's first layer; give one run folder")
        run = runs.load_run(args.runs[0])
        use_backend("auto")
        from mnist_mlp.model import first_layer_weights

        kernel = first_layer_weights(runs.load_model(run))
        with (
            advice.plotted_elsewhere(run.path, args.out, runs.WEIGHTS, " --weights"),
            advice.written_to("--out", args.out, runs.WEIGHTS),
        ):
            out = plots.plot_run_weights(run.path, kernel, args.out)
        print(
            f"Wrote {out} (each unit's 784 weights as a 28x28 image: red where ink raises it, blue lowers it)"
        )
        return
    one = len(args.runs) == 1  # else the curves go to the working folder
    elsewhere = advice.plotted_elsewhere(args.runs[0], args.out) if one else contextlib.nullcontext()
    with elsewhere, advice.written_to("--out", args.out, runs.CURVES):
        out, note = plots.plot_runs(args.runs, args.out)
    print(f"Wrote {out}" + (f" ({note})" if note else ""))


def cmd_runs(args) -> None:
    if args.action == "list":
        table, skipped = experiments.describe_list(args.root)
        for error in skipped:
            print(f"skipped: {advice.line(error)}", file=sys.stderr)
        print(table)
    elif args.action == "show":
        print(experiments.describe_run(runs.load_run(args.run)))
    else:
        from mnist_mlp import plots

        loaded = [runs.load_run(path) for path in args.runs]
        print(experiments.describe_compare(loaded))
        with (
            advice.written_to("--out", args.out, "compare.png"),
            outputs.output(args.out, "compare.png", ".png") as out,
        ):
            print(f"Wrote {plots.plot_curves(plots.named_histories(loaded), out)}")


def cmd_sweep(args) -> None:
    out = Path(args.out)
    if args.report:
        given = [
            flag
            for flag, value in (
                ("--config", args.config),
                ("--set", args.set),
                ("--space", args.space),
                ("--trials", args.trials),
            )
            if value not in (None, [])
        ]
        if given:
            raise UserError(
                f"--report reads the study as it is; {', '.join(given)} would shape a sweep: drop them"
            )
        from mnist_mlp import sweep

        found = sweep.report(out, args.study, args.storage)
        print(sweep.describe_report(found))
        if found["unwritten"]:
            raise UserError(found["unwritten"])
        return
    fixed = [item.partition("=")[0].strip() for item in args.set]
    layer_keys = [key for key in fixed if key in ("hidden_layers", "hidden_width")]
    if layer_keys:  # space keys, not config keys: the config holds the layers as one list
        raise UserError(
            f"--set {layer_keys[0]}: hidden_layers and hidden_width are keys of the space; fix the "
            "layers with --set 'model.hidden_units=[256,256]' (the width of each)"
        )
    base = load_config(args.config, args.set)
    space = load_space(args.space, base, fixed)  # a mistake in the space file is said before Keras starts
    if args.config:
        print(config_line(args.config), flush=True)
    choice = use_backend(base.backend)
    from mnist_mlp import sweep

    try:
        result = sweep.sweep(
            space,
            out,
            choice,
            base=base,
            study_name=args.study,
            storage=args.storage,
            trials=args.trials,
            data_dir=args.cache_dir,
            fixed=fixed,
            log=lambda text: print(text, flush=True),
        )
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted; the same command continues the study (the unfinished trial counts as "
            "failed and another takes its place)"
        ) from None
    print(sweep.describe(result))
    print(f"next: {advice.sweep_report(out, args.study, args.storage)}")


def cmd_bench(args) -> None:
    from mnist_mlp import bench

    if args.json:  # before the bench, not after it
        outputs.check_target(Path(args.json), "--json", "bench.json")
        if not Path(args.json).parent.is_dir():
            raise UserError(
                f"--json {args.json}: its folder does not exist; make it first, or give another path"
            )
        if not os.access(Path(args.json).parent, os.W_OK):
            raise UserError(
                f"--json {args.json}: its folder cannot be written; give --json a writable place, "
                f"e.g. --json {advice.elsewhere('bench.json')}"
            )
    for given in args.config or ():  # --config may be given several times
        print(config_line(given), flush=True)
    report, text = bench.run(
        args.variants,
        args.epochs,
        args.gpu,
        args.time_to,
        args.config,
        args.serve,
        args.connections,
        args.duration,
        args.image,
        args.cold,
        args.give_up,
    )
    print(text, flush=True)  # the results first: a failed write does not cost them
    with (
        advice.written_to("--json", args.json, "bench.json"),
        outputs.output(args.json, "bench.json", ".json", flag="--json") as out,
    ):
        outputs.write_json(out, {"made_by": outputs.MADE_BY, **report})
    print(f"\nWrote {out}")


def cmd_doctor(args) -> int:
    from mnist_mlp import doctor

    text, problems = doctor.describe(doctor.diagnose(args.cache_dir, network=not args.offline))
    print(text)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


COMMANDS = {
    "data": cmd_data,
    "inspect": cmd_inspect,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "runs": cmd_runs,
    "predict": cmd_predict,
    "serve": cmd_serve,
    "plot": cmd_plot,
    "sweep": cmd_sweep,
    "bench": cmd_bench,
    "doctor": cmd_doctor,
}


class _Stderr(logging.Handler):
    """The library's progress lines (logging, INFO) on the stderr of the moment, as `mnist-mlp: ...`."""

    def emit(self, record):
        print(f"mnist-mlp: {record.getMessage()}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    library = logging.getLogger("mnist_mlp")
    if not any(isinstance(h, _Stderr) for h in library.handlers):
        library.addHandler(_Stderr())
        library.setLevel(logging.INFO)
        library.propagate = False
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version and usage errors: return the code, as for commands
        return int(done.code or 0)
    try:
        code = COMMANDS[args.command](args) or 0
        sys.stdout.flush()  # a closed pipe fails here, not in the interpreter's last flush
        return code
    except Interrupted as e:
        print(f"mnist-mlp: {advice.line(e, getattr(args, 'cache_dir', None))}", file=sys.stderr)
        return 130
    except UserError as e:
        print(f"mnist-mlp: error: {advice.line(e, getattr(args, 'cache_dir', None))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnist-mlp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: stop quietly (an OSError, so caught first)
        # Python's recipe: no flush error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a path the user named that cannot be read: too long, no permission, a loop
        if e.filename is None:
            raise
        print(f"mnist-mlp: error: cannot read {e.filename} ({e.strerror}); check the path", file=sys.stderr)
        return 2


def console_main() -> None:
    """The `mnist-mlp` command and `python -m mnist_mlp`: main(), stopped by Ctrl-C, `kill` or a closed
    terminal as by Ctrl-C, ending by that signal (signals.py). In-process callers of main() keep their own
    handlers."""
    signals.for_command()
    signals.end_command(main())


if __name__ == "__main__":
    console_main()
