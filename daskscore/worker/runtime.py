"""A scoring job's life in one worker process: :class:`JobRuntime`.

:meth:`JobRuntime.install` (called by :class:`~daskscore.worker.plugin.ScoringPlugin` in the
worker's task thread, in its turn: :mod:`daskscore.worker.turn`) prepares the job and calls
the script's ``init()`` once: a shipped job, or one whose model is a URL, is localized first
(:mod:`daskscore.worker.localize`); the script's stdout and logging go to
``logs/user/stdout/<worker>.txt`` and the environment is set as Azure sets it
(:mod:`daskscore.worker.environment`); the script is imported with its code folder on
``sys.path`` and ``init()`` is called; a watchdog thread ends the process when a ``run()`` call
overruns ``retry_settings.timeout`` (the nanny starts a fresh process, whose plugin calls
``init()`` again; an in-process cluster's worker is not ended: :mod:`daskscore.worker.overrun`).
The thread needs the GIL, so on a worker with a nanny the deadline of the call in flight is also
written where the nanny reads it (:class:`~daskscore.worker.deadline.DeadlineFile`): a ``run()``
stuck in C code holding the GIL is killed from outside.  Either way the stack of the hung call
goes into the worker's error log and the try's error text (:mod:`daskscore.worker.stacks`).

A failing ``init()`` does not raise: it is kept in :attr:`JobRuntime.init_error`, written to
``logs/user/error/<worker>.txt`` and reported by every task, so the driver fails the job at
once with the script's own traceback.  :meth:`JobRuntime.uninstall` calls ``shutdown()`` if
the script has one and undoes the rest.

A job of a cluster that outlives it (``daskscore cluster start``, a caller's client) keeps the
script initialised instead: :meth:`JobRuntime.park` detaches the runtime from its job, and the
next job with the same ``WorkerJob.warm_key`` takes it over with :meth:`JobRuntime.adopt` —
its own output folder, logs, staging, job id and output format, no second ``init()``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from daskscore import _compat
from daskscore.config import redact
from daskscore.io.storesecrets import job_secrets
from daskscore.io.writers import OutputWriter, get_writer
from daskscore.protocol import SETUP_FAILED, WorkerJob, exception_text
from daskscore.worker import overrun
from daskscore.worker import script as script_mod
from daskscore.worker.deadline import FOLDER, DeadlineFile
from daskscore.worker.deaths import InstallMark
from daskscore.worker.environment import (
    LOG_HANDLER,
    NAME_ERRORS,
    ROOT_LEVEL,
    STREAMS,
    RedactingStream,
    ScriptVariables,
    SwitchableStream,
    WorkingDirectory,
    is_newest,
    mask_handlers,
    missing_model_file,
    reassert_environment,
    restore_environment,
    script_environment,
    set_environment,
)
from daskscore.worker.fdroute import FDS
from daskscore.worker.handoff import SharedDisk, handoff_for
from daskscore.worker.hosting import hint
from daskscore.worker.inflight import Announcer
from daskscore.worker.localize import localize
from daskscore.worker.memory import RunMemory
from daskscore.worker.stacks import StackDump
from daskscore.worker.threads import cap_torch, chosen_threads, limit_blas_threads, torch_threads
from daskscore.worker.turn import TURN

logger = logging.getLogger(__name__)

#: How often the watchdog looks at the run() call in flight; timeouts are whole seconds in
#: practice, so a quarter of a second is precise enough and costs nothing.
WATCHDOG_PERIOD_S = 0.25


class JobRuntime:
    """One job installed in one worker process: its script, its state, its watchdog."""

    def __init__(
        self,
        job: WorkerJob,
        worker_name: str,
        local_directory: str | None = None,
        device: str | None = None,
        eligible: bool = True,
        nanny: bool = False,
    ) -> None:
        self.job = job
        self.worker_name = worker_name
        self.local_directory = local_directory or tempfile.gettempdir()
        self.device = device
        #: False on a worker without the job's resources: nothing installed, no task runs here
        self.eligible = eligible
        self.secrets = job_secrets(job.env, job.storage_env)  # (and the storage variables')
        #: how much of each log file a shipped job already sent home (see drain_job)
        self.drained: dict[str, int] = {}
        #: how results reach the driver: through the shared disk, or in the tasks' replies
        self.handoff: SharedDisk = handoff_for(job)
        #: the output format, worker side: what run()'s results are staged as
        self.writer: OutputWriter = get_writer(job.output_format, job.partition_on)
        #: the job's worker-local folders exist (a shipped job's are made by localize)
        self.localized = not self.handoff.local_folders
        self.module: Any = None
        self._code: script_mod.CodeImport | None = None  # (its code folder's modules)
        self.init_error: str | None = None
        self.init_s = 0.0
        #: this job took over a script initialised by an earlier job (no init() this time)
        self.reused = False
        self.cancelled = False
        self.model_dir: str | None = None
        # the run() call in flight: (deadline, mini_batch, ledger) or None; set by tasks
        self.in_flight: tuple[float, int, Any] | None = None
        #: the error of the call in flight past its deadline, left running (worker/overrun.py)
        self.overran: str | None = None
        #: the peak RSS of the run() in flight (sampled by the watchdog, see worker.memory)
        self.memory = RunMemory()
        #: the worker has a nanny, which enforces timeouts from outside (see deadline.py) ...
        self.nanny = nanny
        #: ... reading the run() in flight in this file
        self.deadlines: DeadlineFile | None = None
        #: where the stacks of a hung run() are dumped, and the thread that runs it
        self.stacks: StackDump | None = None
        self.run_thread: int | None = None
        #: tells the driver which mini-batch a slow run() call is (see worker.inflight)
        self.announcer = Announcer()
        #: the running task's time in run(), fetching and writing (Dask's metrics)
        self.meters = _compat.TaskMeters()
        #: this job's calls one at a time (its tasks on several threads); see turn()
        self.run_lock = threading.Lock()
        self.saved: dict[str, Any] = {}
        self._own_variables: ScriptVariables | None = None
        self.cwd = WorkingDirectory()  # (the script's current directory; set_environment's)
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._stdout: Any = None
        self._log_file: Any = None
        self._sink: SwitchableStream | None = None
        self._log_handler: logging.Handler | None = None
        self._log_token: list[Any] | None = None  # (environment.LOG_HANDLER's)
        #: this job's sys.stdout/stderr and root logger level (environment.Overlapped tokens)
        self._streams: list[Any] | None = None
        self._fds: list[str] | None = None  # (descriptors 1 and 2 routed: worker.fdroute)
        self._root_level: list[Any] | None = None
        #: while install() runs: its mark (the thread, the stage and since when)
        self.installing: InstallMark | None = None

    # ------------------------------------------------------------------ install / uninstall
    def install(self) -> None:
        """Set up the environment, import the script and call init(); never raises.  While it
        runs, an install mark tells the driver which process this is, should it die here."""
        self.installing = mark = InstallMark(self.job.staging, self.worker_name, self._log_path())
        try:
            with TURN.taken(self):  # (no other job's call runs meanwhile: worker.turn)
                self._install(mark)
        finally:
            self.installing = None
            mark.close()

    def _install(self, mark: InstallMark) -> None:
        if self.job.needs_localizing:
            mark.stage("preparing")
            try:
                self.job = localize(self.job, self.local_directory)
                self.localized = True
            except Exception as exc:  # noqa: BLE001 - reported as the job's init() failure
                what = f"the model {self.job.model_url}" if self.job.model_url else "the job"
                self.init_error = redact(
                    f"{SETUP_FAILED} {what} on worker {self.worker_name} failed: "
                    f"{exception_text(exc)}",
                    self.secrets,
                )
                return
        job = self.job
        if job.intra_op_threads:  # loaded before the caps, if forked: the deployment's, or ours
            limit_blas_threads(chosen_threads(job.env) or job.intra_op_threads)
        self._route_output()
        self._set_environment()
        self._own_variables = ScriptVariables((self._stdout, self._sink))
        started = time.perf_counter()
        stage, torch_before = "import", torch_threads()
        try:
            mark.stage(stage)
            self._code = script_mod.open_code(Path(job.code))
            self.module = self._code.load(Path(job.script))
            script_mod.check_entries(self.module, Path(job.script).name)
            stage = "init()"
            mark.stage(stage)
            if getattr(self.module, "init", None) is not None:
                self.module.init()
            cap_torch(job.intra_op_threads, job.env, torch_before)
        except BaseException as exc:  # noqa: BLE001 - the user's code may raise anything
            self.init_error = self._init_error(stage, exc)
            self.write_error(stage, script_mod.full_traceback(exc))
        self.cwd.leave()  # (an in-process worker's: the caller's directory between calls)
        self._own_variables.taken(self.saved)  # (an init() that raised, too)
        self.init_s = time.perf_counter() - started
        self._watchdog = threading.Thread(
            target=self._watch, name=f"daskscore-watchdog-{job.job_id}", daemon=True
        )
        self._watchdog.start()
        try:
            self.stacks = StackDump(Path(self.local_directory) / FOLDER)
        except OSError:  # a timeout is reported without the stack
            logger.warning("cannot write the stacks of hung run() calls", exc_info=True)
        if self.nanny:
            try:
                self.deadlines = DeadlineFile(self.local_directory)
                self.watch_attempt(None)
            except OSError:  # the in-process watchdog still guards run()
                logger.warning("cannot write run() deadlines for the nanny", exc_info=True)

    def adopt(self, job: WorkerJob) -> None:
        """Take over this runtime, parked by an earlier job with the same ``warm_key``, for
        ``job``: its folders, job id and output format; the script stays as ``init()`` left it.
        Raises when a shipped job cannot be localized (the caller installs afresh then)."""
        if job.needs_localizing:  # unpacked or fetched already: found in the cache
            job = localize(job, self.local_directory)
        with TURN.taken(self):
            self._adopt(job)

    def _adopt(self, job: WorkerJob) -> None:
        self.job = job
        self.handoff = handoff_for(job)
        self.writer = get_writer(job.output_format, job.partition_on)
        self.localized = True
        self.drained = {}
        self.cancelled = False
        self.in_flight = None
        self.init_s = 0.0
        self.reused = True
        self._switch_log(self._open_log())
        self._fds = FDS.push(str(self._log_path())) if self.nanny else None  # (before streams)
        self.reassert()
        if self._watchdog is not None:
            self._watchdog.name = f"daskscore-watchdog-{job.job_id}"

    def reassert(self) -> None:
        """What the script sees, set again for the job that takes it over: the environment
        (``AZUREML_BI_OUTPUT_PATH`` is the new job's) with what its ``init()`` set, its current
        directory, ``sys.argv``, its code folder's modules (first on ``sys.path``), the output
        routing (another job's install or uninstall may have changed them)."""
        job = self.job
        env = script_environment(job, self.model_dir, self.device)
        reassert_environment(self.saved, env, [job.script])
        if self._code is not None:
            self._code.reassert()
        if self._streams is not None:
            self._streams = STREAMS.reassert(self._streams, self._stdout)
        if self._log_handler is not None:  # (its records go to its log alone again)
            self._log_token = LOG_HANDLER.reassert(self._log_token, self._log_handler)
        self._root_level = ROOT_LEVEL.reassert(self._root_level, job.logging_level.upper())

    def park(self) -> None:
        """The job is over but the script stays initialised for the next job with the same
        ``warm_key``: its log file is closed (prints go nowhere until then) and a shipped
        job's worker-local folders are removed."""
        with TURN.taken(self):
            self.run_ended()
            FDS.pop(self._fds)
            self._switch_log(open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
        self.handoff.cleanup(self.job)

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Held by a task running mini-batches: one call at a time per process, whichever
        job's, on a worker with several threads too (:mod:`daskscore.worker.turn`)."""
        with self.run_lock, TURN.taken(self):
            yield

    def uninstall(self) -> None:
        with TURN.taken(self):  # (after the call in flight, this job's or another's)
            self._uninstall()

    def _uninstall(self) -> None:
        self._stop.set()
        if self.deadlines is not None:
            self.deadlines.close()
        if self.stacks is not None:
            self.stacks.close()
        if not self.eligible or self._stdout is None and self.module is None:
            return  # nothing was installed (no resources here, or preparing the job failed)
        shutdown = getattr(self.module, "shutdown", None)
        if callable(shutdown) and self.init_error is None:
            if not is_newest(self.saved):  # (its own variables, directory, stdout and log)
                self.reassert()
            self.cwd.enter()  # (undone by restore_environment)
            try:
                shutdown()
            except BaseException as exc:  # noqa: BLE001
                self.write_error("shutdown()", script_mod.full_traceback(exc))
        if self._code is not None:
            self._code.forget()
        self._code = self.module = None  # (what the script holds, a Pool, may be collected)
        restore_environment(self.saved)  # (with what the script's init() set in os.environ)
        self._restore_output()
        if self.model_dir:
            shutil.rmtree(self.model_dir, ignore_errors=True)
        self.handoff.cleanup(self.job)

    # ------------------------------------------------------------------ what users see
    def shown(self, text: str) -> str:
        """``text`` as the user may see it: the code folder named as the user knows it, and
        no secret values."""
        job = self.job
        if job.display_code and job.display_code != job.code:
            text = text.replace(job.code, job.display_code)
        return redact(text, self.secrets)

    def user_traceback(self, exc: BaseException) -> str:
        return self.shown(script_mod.user_traceback(exc, Path(self.job.code)) + hint(exc))

    def _init_error(self, stage: str, exc: BaseException) -> str:
        """The error of a failed import or init(): the script's traceback, after a line saying
        the import failed (and where to install a missing module), or followed by what
        ``AZUREML_MODEL_DIR`` holds when init() looked there for a file that is not."""
        job, text = self.job, self.user_traceback(exc)
        if isinstance(exc, script_mod.ScriptShapeError):
            return self.shown(str(exc))  # (the whole story: no traceback of the check's own)
        if stage == "import":
            head = script_mod.import_failure(
                exc, Path(job.display_code or job.code), Path(job.script)
            )
            return f"{self.shown(head)}\n{text}"
        listing = missing_model_file(exc, self.model_dir)
        return f"{text}\n{self.shown(listing)}" if listing else text

    def _set_environment(self) -> None:
        self.model_dir = set_environment(self.job, self.saved, self.device, self.local_directory)
        self.cwd = self.saved["cwd"]  # (entered: the import and init() follow)
        self.cwd.per_call = not self.nanny and _compat.scheduler_in_process()

    def _log_path(self) -> Path:
        return Path(self.job.logs) / "user" / "stdout" / f"{self.worker_name}.txt"

    def _open_log(self) -> Any:
        path = self._log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        # a non-UTF-8 file name printed by the script is written as \udcff, not an error
        return open(path, "a", encoding="utf-8", errors=NAME_ERRORS, buffering=1)  # noqa: SIM115

    def _switch_log(self, log_file: Any) -> None:
        """Send the script's prints and log lines to ``log_file`` from now on (the same
        ``sys.stdout`` object: a script may have kept a reference to it)."""
        old, self._log_file = self._log_file, log_file
        if self._sink is not None:
            self._sink.switch(log_file)
        if old is not None:
            old.close()

    def _route_output(self) -> None:
        self._log_file = self._open_log()
        self._stdout = self._sink = SwitchableStream(self._log_file)
        if self.nanny:  # (its process is its own: what is written below sys.stdout too)
            self._fds = FDS.push(str(self._log_path()))
        if self.secrets:
            self._stdout = RedactingStream(self._stdout, self.secrets)
        # (a worker in its caller's process, an in-process cluster's: the caller's prints stay
        # the caller's, and so do the script's, rather than all going to the log while open)
        shared = not self.nanny and _compat.scheduler_in_process()
        self._streams = None if shared else STREAMS.push(self._stdout)
        handler = logging.StreamHandler(self._stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._root_level = ROOT_LEVEL.push(self.job.logging_level.upper())
        self._log_token = LOG_HANDLER.push(handler)  # (the only job's handler on the root)
        self._log_handler = handler
        # records also reach the handlers the process inherited (the stderr of --verbose)
        self._unmask = mask_handlers(logging.getLogger(), self.secrets)

    def _restore_output(self) -> None:
        if self._log_handler is not None:
            LOG_HANDLER.pop(self._log_token)
            ROOT_LEVEL.pop(self._root_level)
            self._unmask()
        FDS.pop(self._fds)
        if self._stdout is not None:
            STREAMS.pop(self._streams)
            self._stdout.flush()
            self._stdout = self._sink = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # ------------------------------------------------------------------ errors and timeouts
    def write_error(self, context: str, text: str) -> None:
        """Append ``text`` (a whole traceback, say) to this worker's error log, as shown."""
        path = self._error_log()
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(path, "a", encoding="utf-8", errors=NAME_ERRORS) as fh:
            fh.write(f"{stamp} {context} failed on {self.worker_name}:\n{self.shown(text)}\n\n")

    def watch_attempt(self, attempt: str | None, ledger: Any = None) -> None:
        """The task attempt whose ``run()`` calls come next (None: none, as in ``score()``),
        and its ledger: where the nanny records a timeout it enforces."""
        self.announcer.attempt_starts(self.job.job_id, attempt)
        if self.deadlines is None:
            return
        if attempt is None and self.stacks is not None:
            self.stacks.disarm()  # no run() follows soon: no stack dump pending
        stack = str(self.stacks.path) if self.stacks is not None else None
        self.deadlines.describe_attempt(
            self.job, self.worker_name, attempt, ledger, str(self._error_log()), stack
        )

    def run_started(self, mini_batch: int, try_no: int, start: float, ledger: Any) -> None:
        """A ``run()`` call starts now: the watchdogs (this process's, and the nanny's) end
        the process if it is still running ``retry_settings.timeout`` seconds later."""
        self.run_thread = threading.get_ident()
        self.cwd.enter()
        self.announcer.started(mini_batch, try_no, start)
        if self.deadlines is not None and self.stacks is not None:
            self.stacks.arm(self.job.timeout)  # for the nanny: a dump if run() keeps the GIL
        deadline = time.monotonic() + self.job.timeout
        self.overran = None
        self.in_flight = (deadline, mini_batch, ledger)
        if self.deadlines is not None:
            self.deadlines.started(deadline, mini_batch, try_no, start, self.run_thread)

    def run_ended(self) -> None:
        self.in_flight = None
        TURN.resume()  # (a call past its timeout, left to finish, waits for the turn again)
        self.cwd.leave()
        if self.deadlines is not None:
            self.deadlines.finished()

    def _error_log(self) -> Path:
        return Path(self.job.logs) / "user" / "error" / f"{self.worker_name}.txt"

    def _watch(self) -> None:
        while not self._stop.wait(WATCHDOG_PERIOD_S):
            flight = self.in_flight
            self.announcer.tick(flight is not None)
            if flight is None or self.overran is not None:
                continue
            if time.monotonic() < flight[0]:
                self.memory.sample()
                continue
            overrun.timed_out(self, flight[1], flight[2])

    def flush_output(self) -> None:
        if self._stdout is not None:
            self._stdout.flush()
