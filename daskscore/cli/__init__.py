"""The ``daskscore`` command: parses (:mod:`daskscore.cli.parser`), loads, calls
:mod:`daskscore.engine.runner`, and reports.

Errors are short — one paragraph, and the user's traceback for a failed job — unless
``--verbose``; exit codes: 0 Completed, 1 Failed, 2 usage or configuration errors.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import shlex
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from daskscore import _compat
from daskscore.cli.hint import command_line
from daskscore.cli.parser import build_parser as _parser
from daskscore.cluster.local import parse_resources, tls_security
from daskscore.config.loader import load_deployment, path_from_here
from daskscore.config.options import JobOptions
from daskscore.config.settings import UnknownKeyWarning
from daskscore.devtools import scaffold
from daskscore.devtools import validate as devtools
from daskscore.devtools.replay import replay
from daskscore.engine.runner import execute
from daskscore.errors import DaskScoreError, JobFailed, StopSignal
from daskscore.ui.termtext import closed, quiet_when_closed, say, write

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: A Ctrl-C before the command began (its arguments read), as ``daskscore.__main__`` says it.
STARTING = (
    "daskscore: interrupted as the command started: nothing was run, and no output folder was "
    "changed.\n"
)


def cmd_cluster(args: argparse.Namespace) -> int:
    from daskscore.cluster import warm

    given = vars(args)
    ok, text = warm.act(
        args.action, given.get("workers"), given.get("dashboard"), given.get("resources")
    )
    write(text + "\n", sys.stdout)
    return EXIT_OK if ok else EXIT_FAILED


def cmd_validate(args: argparse.Namespace) -> int:
    with quiet_when_closed():  # (`daskscore validate ... | head -3`)
        return devtools.validate(
            args.deployment,
            args.input,
            _overrides(args),
            rows=args.rows,
            post_mortem=args.pdb,
            lenient=args.lenient,
            mini_batch=args.mini_batch,
        )


def cmd_replay(args: argparse.Namespace) -> int:
    with quiet_when_closed():
        return replay(
            args.output,
            args.mini_batch,
            post_mortem=args.pdb,
            rows=args.rows,
            overrides=_overrides(args),
        )


def cmd_init(args: argparse.Namespace) -> int:
    root = scaffold.scaffold(args.name, args.template)
    write(
        f"Created {root}/. Try it: daskscore validate {shlex.quote(str(root / 'deployment.yml'))} "
        f"--input {shlex.quote(str(root / 'sample-inputs'))}\n"
    )
    return EXIT_OK


def _overrides(args: argparse.Namespace) -> dict[str, str | int]:
    overrides: dict[str, str | int] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"--set {item!r}: expected KEY=VALUE")
        key = key.strip()
        overrides[key] = path_from_here(key, value)  # (a path: relative to where you are)
    if getattr(args, "mini_batch_size", None) is not None:
        overrides["settings.mini_batch_size"] = args.mini_batch_size
    if getattr(args, "instance_count", None) is not None:
        overrides["settings.instance_count"] = args.instance_count
    return overrides


def _columns(values: list[str]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values for v in item.split(",") if v.strip())


#: The warnings said on stderr so far: a job's summary's others are said after its verdict.
_SAID: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    prefix = "warning" if issubclass(category, UnknownKeyWarning) else category.__name__
    _SAID.add(str(message))
    write(f"daskscore: {prefix}: {message}\n")


def cmd_run(args: argparse.Namespace) -> int:
    deployment = load_deployment(args.deployment, _overrides(args), lenient=args.lenient)
    options = JobOptions(
        overwrite=args.overwrite,
        resume=args.resume,
        retry_failed=args.retry_failed,
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
        notify=say,
        warm=not args.no_warm,
        isolate_failures=args.isolate_failures,
        worker_memory=args.worker_memory,
        init_timeout=args.init_timeout,
    )
    result = execute(deployment, args.input, args.output, options)
    s = result.summary
    from daskscore.engine.finish import failure_message, nothing_succeeded

    verdict = (
        f"Job {result.status}: {s['succeeded_items']} of {s['total_items']} items succeeded, "
        f"{s['failed_items']} failed, in {s['duration_s']:.1f} s."
    )
    bad = nothing_succeeded(s)  # red, though Azure's status and exit code say Completed
    if bad:
        verdict = verdict.replace(": 0 of", ", but no item succeeded: 0 of", 1)
    say(verdict, style="1;31" if bad else None)
    for text in s.get("warnings") or []:  # (what the job warned of: a script's file set aside)
        if text not in _SAID:
            say(f"daskscore: warning: {text}")
    if s["failures"]:
        say(failure_message(s))
    target = result.predictions or result.output
    say(f"Results: {target}")
    _print_report(s)  # (always the last line)
    return EXIT_OK


def _print_report(summary: dict | None) -> None:
    """The last line of a job's output: where its report.html is."""
    output = (summary or {}).get("output")
    if output:
        say(f"Report: {str(output).rstrip('/')}/report.html")


def _interrupted(exc: KeyboardInterrupt, argv: Sequence[str], overrides: Sequence[str]) -> None:
    """Ctrl-C: say what was kept, how to go on (the same command, resumed: its secrets masked,
    :func:`daskscore.cli.hint.command_line`), and the report."""
    out_dir = getattr(exc, "out_dir", None)
    when = getattr(exc, "when", None)
    if out_dir is None:
        if when is None:  # (outside a job: a check, a listing)
            say("daskscore: interrupted")
            return
        say(
            f"daskscore: interrupted {when}: nothing was run and the output folder was not changed."
        )
        _say_command("Start again with", argv, overrides)
        return
    s = getattr(exc, "summary", None)
    if getattr(exc, "finished", False):  # (its own summary was written: nothing to resume)
        status = s.get("status", "finished") if s else "finished"
        say(
            f"daskscore: interrupted as the job ended: it is {status}, its results are in "
            f"{out_dir}; nothing is left to resume."
        )
    elif getattr(exc, "url", None):  # (the job ended: its upload did not)
        args = [a for a in argv if a != "--overwrite"]
        args += [] if "--resume" in args else ["--resume"]
        status = s.get("status", "finished") if s else "finished"
        say(
            f"daskscore: interrupted while the output was uploaded to {exc.url}: the job had "
            f"ended ({status}), and its whole output is kept in {out_dir}; part of it may have "
            f"reached {exc.url}."
        )
        _say_command("Upload it with", args, overrides)
    else:
        args = [a for a in argv if a != "--overwrite"]
        how = "--retry-failed" if getattr(exc, "retry", False) else "--resume"
        if how not in args:
            args.append(how)
        reason = getattr(exc, "reason", None) or (s or {}).get("reason")
        done = f": {reason}" if reason else ""
        say(f"daskscore: interrupted{done}. What is done is kept in {out_dir}.")
        if s:
            say(f"Summary: {out_dir}/job_summary.json")
        _say_command("Go on with", args, overrides)
    if getattr(exc, "report", None) is not None:
        say(f"Report: {exc.report}")


def _say_command(label: str, argv: Sequence[str], overrides: Sequence[str]) -> None:
    line, notes = command_line(argv, overrides)
    say(f"{label}: {line}")
    for note in notes:
        say(note)


COMMANDS = {
    "run": cmd_run,
    "validate": cmd_validate,
    "replay": cmd_replay,
    "init": cmd_init,
    "cluster": cmd_cluster,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``daskscore`` console script."""
    try:
        parser = _parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # (as in daskscore.__main__, while the imports ran)
        write(STARTING)
        return 128 + signal.SIGINT
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    verbose = getattr(args, "verbose", False)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.showwarning = _show_warning
    ended, saved = _stop_like_ctrl_c()
    try:
        return _command(args, parser, argv, verbose, ended)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _command(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    verbose: bool,
    ended: list[int],
) -> int:
    """Run the command, and turn what it raises into what the user reads and an exit code."""
    try:
        return COMMANDS[args.command](args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    except JobFailed as exc:
        say(str(exc))
        _print_report(getattr(exc.result, "summary", None))
        return EXIT_FAILED
    except DaskScoreError as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]  # a deployment's, all at once
        for problem in problems:
            say(f"daskscore: error: {problem}")
        if len(problems) > 1:
            say(f"daskscore: {len(problems)} problems found; nothing was run.")
        if verbose:
            raise
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - an internal error: short, details in the log
        if verbose:
            raise
        log = logging.getLogger("daskscore")
        if log.hasHandlers():  # (a job's log: the traceback is kept there; else --verbose's)
            log.exception("internal error")
        write(
            f"daskscore: internal error: {type(exc).__name__}: {exc} (rerun with --verbose "
            "for the traceback)\n"
        )
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        first = ended[-1] if ended else signal.SIGINT  # (the one that stopped the command)
        if first != signal.SIGINT:
            say(f"daskscore: {signal.Signals(first).name} received: stopping as for Ctrl-C")
        given = list(sys.argv[1:] if argv is None else argv)
        _interrupted(exc, given, getattr(args, "set", None) or [])
        return 128 + first
    return EXIT_USAGE


#: Signals that stop a command as Ctrl-C does (what is done is kept, and said): a batch
#: system's or ``timeout``'s SIGTERM, a closed terminal's SIGHUP.
STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def _stop_like_ctrl_c() -> tuple[list[int], dict[int, Any]]:
    """Make :data:`STOP_SIGNALS` raise ``KeyboardInterrupt`` (a :class:`StopSignal`) in this
    (the main) thread, as SIGINT does; the list returned gets the number of each signal that
    stopped the command (the exit status is 128 + the last), the dict the handlers replaced
    (put back when the command returns).  Left alone where a handler of the caller's own is set.

    A signal that comes while the ``KeyboardInterrupt`` of an earlier one is handled (what is
    done written up, the cluster closed, the resume command printed) is noted and ignored: a
    key pressed twice, a batch system's SIGTERM sent twice, would cut that short.  (One whose
    ``KeyboardInterrupt`` was lost, raised where Python ignores exceptions, stops the
    command as the first would.)"""
    ended: list[int] = []
    saved: dict[int, Any] = {}
    driver = os.getpid()
    noted: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != driver:  # a process forked from this one (a worker): as before
            before = saved[signum]
            signal.signal(signum, before)
            if callable(before):
                before(signum, frame)
            else:
                os.kill(os.getpid(), signum)
            return
        if _handling_interrupt():
            if not noted:  # (os.write: a print here could land inside another one)
                noted.append(signum)
                with contextlib.suppress(OSError):  # (a closed pipe: said nowhere)
                    os.write(2, b"daskscore: stopping already, writing up what is done\n")
            return
        ended.append(signum)
        name = signal.Signals(signum).name
        raise KeyboardInterrupt if signum == signal.SIGINT else StopSignal(name)

    for name in ("SIGINT", *STOP_SIGNALS):
        sig = getattr(signal, name, None)
        default = signal.default_int_handler if name == "SIGINT" else signal.SIG_DFL
        try:
            if sig is not None and signal.getsignal(sig) in (default, None):
                saved[sig] = signal.signal(sig, stop)
        except ValueError:  # (main() called off the main thread)
            pass
    return ended, saved


def _handling_interrupt() -> bool:
    """Whether this thread is handling a ``KeyboardInterrupt`` now: in a clause it reached
    (``except``, ``finally``, a context manager's exit), or in one of an exception raised
    meanwhile."""
    exc, seen = sys.exc_info()[1], set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


def entry() -> None:
    """The ``daskscore`` command, imported by :func:`daskscore.__main__.entry`: :func:`main`, then
    exit without tearing the interpreter down.

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
    if isinstance(code, int) and code - 128 in _stop_numbers():  # stopped by a signal:
        for sig in _stop_numbers():  # another one must not cut its exit short
            signal.signal(sig, signal.SIG_IGN)
    leave(code)


def _stop_numbers() -> list[int]:
    """SIGINT's and the :data:`STOP_SIGNALS`' numbers (those this platform has)."""
    names = ("SIGINT", *STOP_SIGNALS)
    return [int(getattr(signal, n)) for n in names if hasattr(signal, n)]


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
        write(f"{code}\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # a closed pipe (daskscore ... | head): no error at exit
            closed(stream)
        except (OSError, ValueError):  # a closed stream
            pass
    if not exited:  # (a Python without those steps at hand: its own exit, teardown and all)
        sys.exit(code)
    os._exit(code)
