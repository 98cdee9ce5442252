"""The ``daskscore`` command's arguments: the parser of every subcommand, and the checks of
its numeric options.

A number that cannot be meant (``--workers -1``, ``--prefetch-mb nan``) is a usage error
naming the option and the value, exit code 2, before anything starts.  The deployment's own
numbers (``--set KEY=VALUE`` and the YAML file) are checked by :mod:`daskscore.config.loader`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from daskscore import __version__
from daskscore.cluster.local import parse_resources
from daskscore.config.options import DEFAULT_PREFETCH, DEFAULT_PREFETCH_MB
from daskscore.config.values import mini_batch_size as check_mini_batch_size
from daskscore.config.values import override_value
from daskscore.devtools import scaffold
from daskscore.errors import UsageError
from daskscore.io.writers import formats

# --------------------------------------------------------------------------- numeric values


def integer(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum``."""
    expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def megabytes(text: str) -> float:
    """An argparse ``type``: a finite number of megabytes above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of megabytes above 0, got {text!r}")
    return value


def resources(text: str) -> str:
    """An argparse ``type``: ``NAME=AMOUNT[,...]`` with finite amounts above 0 (kept as text)."""
    try:
        found = parse_resources(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--resources: ")) from None
    for name, amount in found.items():
        if not (math.isfinite(amount) and amount > 0):
            raise argparse.ArgumentTypeError(
                f"{name}: expected an amount above 0, got {amount:g} (in {text!r})"
            )
    return text


def mini_batch_size(text: str) -> int | str:
    """An argparse ``type``: what ``settings.mini_batch_size`` takes (files per mini-batch, or
    a tabular byte size or row count: ``10``, ``2KB``, ``"500 rows"``), checked as the key is."""
    try:
        value = override_value(["settings", "mini_batch_size"], text)  # (as --set reads it)
        return check_mini_batch_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


POSITIVE = integer(1)
LENIENT_HELP = (
    "ignore deployment keys that neither daskscore nor Azure ML knows, with a warning (kept in "
    "the job's log and summary), instead of refusing them"
)


class Once(argparse.Action):
    """An option that names one path (``--input``, ``--output``): given twice it is a usage
    error naming both values (argparse would keep the last one without a word)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        given = namespace.__dict__.setdefault("_given_once", {})
        if self.dest in given:
            what = "one input file or folder" if self.dest == "input" else "one output folder"
            raise argparse.ArgumentError(
                self, f"given twice ({given[self.dest]!r}, {values!r}): give {what}"
            )
        given[self.dest] = values
        setattr(namespace, self.dest, values)


# --------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``daskscore`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="daskscore",
        description="Run Azure ML batch-deployment scoring scripts unchanged on Dask.",
    )
    parser.add_argument("--version", action="version", version=f"daskscore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _run_parser(sub)
    _dev_parsers(sub)
    _cluster_parser(sub)
    return parser


def _run_parser(sub: Any) -> None:
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
        action=Once,
        metavar="PATH",
        help="input file or folder (recursive, sorted, dot-files skipped)",
    )
    run.add_argument(
        "--output",
        "-o",
        required=True,
        action=Once,
        metavar="DIR",
        help="output folder (created if missing)",
    )
    run.add_argument(
        "--workers",
        type=POSITIVE,
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
        type=mini_batch_size,
        metavar="N",
        help="files per mini-batch, or for tabular inputs a byte size (10MB) or a row count "
        "('500 rows') (settings.mini_batch_size)",
    )
    run.add_argument(
        "--instance-count", type=POSITIVE, metavar="N", help="instances (resources.instance_count)"
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a deployment key, e.g. --set settings.output_file_name=x.csv (repeatable)",
    )
    run.add_argument("--lenient", action="store_true", help=LENIENT_HELP)
    _output_arguments(run)
    run.add_argument(
        "--prefetch",
        type=integer(0),
        default=DEFAULT_PREFETCH,
        metavar="N",
        help="mini-batches each worker fetches (downloads, reads) ahead while run() scores one; "
        f"0 turns it off (default {DEFAULT_PREFETCH})",
    )
    run.add_argument(
        "--prefetch-mb",
        type=megabytes,
        default=DEFAULT_PREFETCH_MB,
        metavar="MB",
        help="fetch ahead only while what a worker holds fetched is under MB megabytes "
        f"(default {DEFAULT_PREFETCH_MB:g})",
    )
    earlier = run.add_mutually_exclusive_group()
    earlier.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier job in the output folder",
    )
    earlier.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted job in the output folder where it stopped (not with "
        "--overwrite, which would discard what it did)",
    )
    earlier.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again only the failed, partial and unrun mini-batches of the finished job in "
        "the output folder (after fixing the script or model) and rewrite its whole output",
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
    run.add_argument(
        "--isolate-failures",
        action="store_true",
        help="split a mini-batch that fails every try (exception, timeout, process death) and "
        "retry its parts, down to single items, so that only the items that fail on their own "
        "are counted failed (Azure counts the whole mini-batch; off by default)",
    )
    run.add_argument(
        "--init-timeout",
        metavar="SECONDS",
        type=float,
        help="fail the job when the scoring script's import and init() have not returned on "
        "a worker after this many seconds, showing where init() was (default: no limit; the "
        "job log says where a slow init() is after a minute)",
    )
    run.add_argument(
        "--worker-memory",
        metavar="LIMIT",
        help="memory limit of each embedded worker, e.g. 4GB (Dask's memory_limit; its nanny "
        "restarts a worker above 95%% of it, and the try is charged out of memory); not with "
        "--scheduler",
    )


def _output_arguments(run: argparse.ArgumentParser) -> None:
    """The output format and the tabular mode."""
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
        "--rows-per-file", type=POSITIVE, metavar="N", help="dataset formats: about N rows per file"
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
        type=resources,
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
    start.add_argument(
        "--workers", type=POSITIVE, metavar="N", help="worker processes (default: cores)"
    )
    start.add_argument("--dashboard", action="store_true", help="serve the dashboard on 127.0.0.1")
    start.add_argument(
        "--resources",
        type=resources,
        metavar="NAME=N[,...]",
        help="resources every worker offers, e.g. GPU=1",
    )
    actions.add_parser("status", help="its address, workers and initialised scripts")
    actions.add_parser("stop", help="stop it (the scripts' shutdown() runs)")


def _dev_parsers(sub: Any) -> None:
    """``daskscore validate``, ``replay`` and ``init``: the local debugging loop."""
    check = sub.add_parser(
        "validate",
        help="try a deployment on its first mini-batch, in this process, without a cluster",
        description="List every problem of a deployment file at once, then import the scoring "
        "script as a worker would, call init() and run() on the first mini-batch (or the one "
        "--mini-batch names), and show the rows as append_row writes them. Exit codes: 0 all "
        "well, 1 the script raised, 2 a problem of the deployment, the script file or the input.",
    )
    check.add_argument("deployment", metavar="DEPLOYMENT", help="the deployment YAML file")
    check.add_argument(
        "--input", "-i", required=True, action=Once, metavar="PATH", help="input file or folder"
    )
    check.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a deployment key, as for daskscore run (repeatable)",
    )
    check.add_argument("--lenient", action="store_true", help=LENIENT_HELP)
    check.add_argument(
        "--mini-batch-size",
        type=mini_batch_size,
        metavar="N",
        help="files per mini-batch, or a tabular byte size or row count, as "
        "settings.mini_batch_size takes it (the first is run)",
    )
    check.add_argument(
        "--mini-batch",
        type=integer(0),
        default=0,
        metavar="N",
        help="the mini-batch to try, numbered as daskscore run numbers them (default 0)",
    )
    check.add_argument(
        "--pdb",
        action="store_true",
        help="when init() or run() raises, start pdb post-mortem in the script's frame",
    )
    check.add_argument(
        "--rows",
        type=integer(0),
        default=10,
        metavar="N",
        help="output lines to show (default 10)",
    )
    again = sub.add_parser(
        "replay",
        help="run one mini-batch of a finished job again, in this process, without a cluster",
        description="Run mini-batch N of the job in OUTPUT again here: the job's deployment "
        "(--set overrides and environment variables included), its input (downloaded again "
        "if remote), and the scoring script as it is now; init() then run(). Prints the rows "
        "as append_row writes them, or the script's traceback. Exit codes: 0 all well, 1 the "
        "script raised, 2 OUTPUT holds no job, N is not one of its mini-batches, or the input "
        "changed since the job ran.",
    )
    again.add_argument("output", metavar="OUTPUT", help="the output folder of the job")
    again.add_argument(
        "--mini-batch",
        "-m",
        type=integer(0),
        required=True,
        metavar="N",
        help="the mini-batch id (as in failed_items.csv and processed_mini-batches.csv)",
    )
    again.add_argument(
        "--pdb",
        action="store_true",
        help="when init() or run() raises, start pdb post-mortem in the script's frame",
    )
    again.add_argument(
        "--rows", type=integer(0), metavar="N", help="output lines to show (default: all)"
    )
    again.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="settings.environment_variables.NAME=VALUE: a secret value the job's recipe does "
        "not keep (default: from the deployment file, else the environment) (repeatable)",
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
