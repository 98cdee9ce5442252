"""The ``daskscore`` command: parses, loads, calls :mod:`daskscore.engine.runner`, and reports.

Errors are short — one paragraph, and the user's traceback for a failed job — unless
``--verbose``; exit codes: 0 Completed, 1 Failed, 2 usage or configuration errors.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daskscore import __version__, _compat
from daskscore.cluster.local import parse_resources, tls_security
from daskscore.config.loader import load_deployment
from daskscore.config.options import DEFAULT_PREFETCH, DEFAULT_PREFETCH_MB, JobOptions
from daskscore.config.settings import UnknownKeyWarning
from daskscore.devtools import scaffold
from daskscore.devtools import validate as devtools
from daskscore.engine.runner import execute
from daskscore.errors import DaskScoreError, JobFailed
from daskscore.io.writers import formats

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daskscore",
        description="Run Azure ML batch-deployment scoring scripts unchanged on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"daskscore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run a deployment over an input file or folder",
        description="Run a batch deployment (scoring script + deployment.yml) over an input "
        "file or folder, on an embedded LocalCluster or an existing Dask cluster.",
    )
    run.add_argument("deployment", metavar="DEPLOYMENT", help="the deployment YAML file")
    run.add_argument(
        "--input",
        "-i",
        required=True,
        metavar="PATH",
        help="input file or folder (recursive, sorted, dot-files skipped)",
    )
    run.add_argument(
        "--output", "-o", required=True, metavar="DIR", help="output folder (created if missing)"
    )
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes of the embedded cluster (default: "
        "max_concurrency_per_instance × instance_count)",
    )
    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="use the running Dask scheduler at ADDRESS instead of an embedded cluster",
    )
    _cluster_arguments(run)
    run.add_argument(
        "--mini-batch-size",
        type=int,
        metavar="N",
        help="files per mini-batch (settings.mini_batch_size)",
    )
    run.add_argument(
        "--instance-count", type=int, metavar="N", help="instances (resources.instance_count)"
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a deployment key, e.g. --set settings.output_file_name=x.csv (repeatable)",
    )
    run.add_argument(
        "--output-format",
        choices=formats(),
        help="default: the deployment's output_action; parquet and csv write a dataset folder "
        "named after output_file_name",
    )
    run.add_argument(
        "--partition-on",
        action="append",
        default=[],
        metavar="COLUMN",
        help="dataset formats: partition by COLUMN, hive-style (repeatable, or comma-separated)",
    )
    run.add_argument(
        "--rows-per-file", type=int, metavar="N", help="dataset formats: about N rows per file"
    )
    run.add_argument(
        "--tabular",
        action="store_true",
        default=None,
        help="tabular mode: run() gets a DataFrame of rows from CSV/Parquet inputs; on by "
        "itself when mini_batch_size is a byte size such as 10MB",
    )
    run.add_argument(
        "--carry-columns",
        action="append",
        default=[],
        metavar="COLUMN",
        help="tabular mode: input columns (or file, row) joined onto run()'s result "
        "(repeatable, or comma-separated)",
    )
    run.add_argument(
        "--prefetch",
        type=int,
        default=DEFAULT_PREFETCH,
        metavar="N",
        help="mini-batches each worker fetches (downloads, reads) ahead while run() scores one; "
        f"0 turns it off (default {DEFAULT_PREFETCH})",
    )
    run.add_argument(
        "--prefetch-mb",
        type=float,
        default=DEFAULT_PREFETCH_MB,
        metavar="MB",
        help="fetch ahead only while what a worker holds fetched is under MB megabytes "
        f"(default {DEFAULT_PREFETCH_MB:g})",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier job in the output folder",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted job in the output folder where it stopped",
    )
    run.add_argument("--no-progress", action="store_true", help="draw no progress")
    board = run.add_mutually_exclusive_group()
    board.add_argument(
        "--dashboard",
        action="store_true",
        default=None,
        help="start the Dask dashboard of the embedded cluster and print its link (default: "
        "when stderr is a terminal)",
    )
    board.add_argument(
        "--no-dashboard",
        dest="dashboard",
        action="store_false",
        help="do not start the Dask dashboard",
    )
    run.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="show daskscore's own tracebacks and log lines on stderr",
    )
    run.add_argument(
        "--no-warm",
        action="store_true",
        help="ignore a running warm cluster (daskscore cluster start): start an embedded one, "
        "and install the script for this job only",
    )
    _dev_parsers(sub)
    _cluster_parser(sub)
    return parser


def _cluster_arguments(run: argparse.ArgumentParser) -> None:
    """The options of a job on an existing cluster: files, TLS and resources."""
    share = run.add_mutually_exclusive_group()
    share.add_argument(
        "--shared-filesystem",
        dest="shared_filesystem",
        action="store_true",
        default=None,
        help="the workers see the driver's files (default: found out by asking them)",
    )
    share.add_argument(
        "--no-shared-filesystem",
        dest="shared_filesystem",
        action="store_false",
        help="ship the code and model to the workers and bring results home in task replies",
    )
    run.add_argument("--tls-ca-file", metavar="PEM", help="CA certificate of a tls:// scheduler")
    run.add_argument("--tls-cert", metavar="PEM", help="this client's TLS certificate")
    run.add_argument("--tls-key", metavar="PEM", help="this client's TLS private key")
    run.add_argument(
        "--resources",
        metavar="NAME=N[,...]",
        help="worker resources each task needs, as Dask's resources=, e.g. GPU=1",
    )


def _cluster_parser(sub: Any) -> None:
    """``daskscore cluster start|status|stop``: the warm cluster that jobs reuse."""
    cluster = sub.add_parser(
        "cluster",
        help="start, show or stop the warm cluster that daskscore run uses when it runs",
        description="A LocalCluster that outlives its jobs: daskscore run uses it when it "
        "runs, and its workers keep a deployment's script initialised between jobs.",
    )
    actions = cluster.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="start, status or stop"
    )
    start = actions.add_parser("start", help="start it in the background (if none runs)")
    start.add_argument("--workers", type=int, metavar="N", help="worker processes (default: cores)")
    start.add_argument("--dashboard", action="store_true", help="serve the dashboard on 127.0.0.1")
    start.add_argument(
        "--resources", metavar="NAME=N[,...]", help="resources every worker offers, e.g. GPU=1"
    )
    actions.add_parser("status", help="its address, workers and initialised scripts")
    actions.add_parser("stop", help="stop it (the scripts' shutdown() runs)")


def cmd_cluster(args: argparse.Namespace) -> int:
    from daskscore.cluster import warm

    given = vars(args)
    ok, text = warm.act(
        args.action, given.get("workers"), given.get("dashboard"), given.get("resources")
    )
    print(text)
    return EXIT_OK if ok else EXIT_FAILED


def _dev_parsers(sub: Any) -> None:
    """``daskscore validate`` and ``daskscore init``: the local debugging loop."""
    check = sub.add_parser(
        "validate",
        help="try a deployment on its first mini-batch, in this process, without a cluster",
        description="List every problem of a deployment file at once, then import the scoring "
        "script as a worker would, call init() and run() on the first mini-batch, and show the "
        "rows as append_row writes them. Exit codes: 0 all well, 1 the script raised, 2 a "
        "problem of the deployment, the script file or the input.",
    )
    check.add_argument("deployment", metavar="DEPLOYMENT", help="the deployment YAML file")
    check.add_argument("--input", "-i", required=True, metavar="PATH", help="input file or folder")
    check.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a deployment key, as for daskscore run (repeatable)",
    )
    check.add_argument(
        "--mini-batch-size", type=int, metavar="N", help="files per mini-batch (the first is run)"
    )
    check.add_argument(
        "--pdb",
        action="store_true",
        help="when init() or run() raises, start pdb post-mortem in the script's frame",
    )
    check.add_argument(
        "--rows", type=int, default=10, metavar="N", help="output lines to show (default 10)"
    )
    init = sub.add_parser(
        "init",
        help="create a deployment folder to start a scoring script from",
        description="Create NAME/ with deployment.yml (every setting, commented), "
        "code/score.py (an init()/run() template), model/ and sample-inputs/.",
    )
    init.add_argument("name", metavar="NAME", help="the folder to create (new, or empty)")
    init.add_argument(
        "--template",
        choices=scaffold.TEMPLATES,
        default="minimal",
        help="minimal: pandas only; torch: a small PyTorch network (default: minimal)",
    )


def cmd_validate(args: argparse.Namespace) -> int:
    return devtools.validate(
        args.deployment, args.input, _overrides(args), rows=args.rows, post_mortem=args.pdb
    )


def cmd_init(args: argparse.Namespace) -> int:
    root = scaffold.scaffold(args.name, args.template)
    print(
        f"Created {root}/. Try it: daskscore validate {root / 'deployment.yml'} "
        f"--input {root / 'sample-inputs'}",
        file=sys.stderr,
    )
    return EXIT_OK


def _overrides(args: argparse.Namespace) -> dict[str, str | int]:
    overrides: dict[str, str | int] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"--set {item!r}: expected KEY=VALUE")
        key = key.strip()
        if (
            key in ("model.path", "model", "code_configuration.code")
            and value
            and "://" not in value
        ):
            value = str(Path(value).expanduser().resolve())  # relative to where you are
        overrides[key] = value
    if args.mini_batch_size is not None:
        overrides["settings.mini_batch_size"] = args.mini_batch_size
    if getattr(args, "instance_count", None) is not None:
        overrides["settings.instance_count"] = args.instance_count
    return overrides


def _columns(values: list[str]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    prefix = "warning" if issubclass(category, UnknownKeyWarning) else category.__name__
    print(f"daskscore: {prefix}: {message}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    deployment = load_deployment(args.deployment, _overrides(args))
    options = JobOptions(
        overwrite=args.overwrite,
        resume=args.resume,
        workers=args.workers,
        scheduler=args.scheduler,
        shared_filesystem=args.shared_filesystem,
        security=tls_security(args.tls_ca_file, args.tls_cert, args.tls_key),
        resources=parse_resources(args.resources),
        output_format=args.output_format,
        partition_on=_columns(args.partition_on),
        rows_per_file=args.rows_per_file,
        tabular=args.tabular,
        carry_columns=_columns(args.carry_columns),
        prefetch=args.prefetch,
        prefetch_mb=args.prefetch_mb,
        progress=not args.no_progress,
        dashboard=sys.stderr.isatty() if args.dashboard is None else args.dashboard,
        notify=lambda message: print(message, file=sys.stderr, flush=True),
        warm=not args.no_warm,
    )
    result = execute(deployment, args.input, args.output, options)
    s = result.summary
    print(
        f"Job {result.status}: {s['succeeded_items']} of {s['total_items']} items succeeded, "
        f"{s['failed_items']} failed, in {s['duration_s']:.1f} s.",
        file=sys.stderr,
    )
    if s["failures"]:
        from daskscore.engine.finish import failure_message

        print(failure_message(s), file=sys.stderr)
    target = result.predictions or result.output
    print(f"Results: {target}", file=sys.stderr)
    return EXIT_OK


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "init": cmd_init, "cluster": cmd_cluster}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``daskscore`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    verbose = getattr(args, "verbose", False)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.showwarning = _show_warning
    try:
        return COMMANDS[args.command](args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    except JobFailed as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    except DaskScoreError as exc:
        print(f"daskscore: error: {exc}", file=sys.stderr)
        if verbose:
            raise
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - an internal error: short, details in the log
        if verbose:
            raise
        logging.getLogger("daskscore").exception("internal error")
        print(
            f"daskscore: internal error: {type(exc).__name__}: {exc} (rerun with --verbose "
            "for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("daskscore: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


def entry() -> None:
    """The ``daskscore`` console script (and ``python -m daskscore``): :func:`main`, then exit
    without tearing the interpreter down.

    Everything imported by now (Dask, daskscore: some 60,000 objects) lives as long as the
    process, so it is moved out of the garbage collector's sight (``gc.freeze``): a full
    collection walked all of it, 40 ms at a time (one fell while the job's logs were written),
    and so did the workers forked from this process.
    """
    gc.freeze()
    try:
        code = main()
    except SystemExit as exc:  # --help, --version, usage errors
        code = exc.code
    leave(code)


def leave(code: int | str | None) -> None:
    """Exit as ``sys.exit(code)`` would, minus the interpreter's teardown.

    By now every file daskscore wrote is closed and the cluster is shut down.  What Python's
    own exit would still do is wait for the threads still running (and shut its thread pools
    down), run the exit handlers, flush the standard streams, and then take apart every
    module and object (0.1-0.15 s with Dask loaded: a twentieth of a small job).  The first
    three happen here; the last is skipped.
    """
    exited = _compat.run_exit_steps()  # the threads, then the exit handlers
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    if not exited:  # (a Python without those steps at hand: its own exit, teardown and all)
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (daskscore ... | head), a closed stream
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
