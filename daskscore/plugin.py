"""The worker plugin: the scoring script's life in one worker process.

Modelled on ``distributed.diagnostics.plugin.UploadFile``: :class:`ScoringPlugin` carries plain
data (a :class:`WorkerJob`) from the driver, and its ``setup`` installs the job in the worker:

1. the environment (``AZUREML_MODEL_DIR`` laid out as Azure does, ``AZUREML_BI_OUTPUT_PATH``,
   ``settings.environment_variables``, ``sys.argv`` of the script's own), the script's stdout
   and logging routed to ``logs/user/stdout/<worker>.txt``;
2. the script imported with its code folder on ``sys.path``, and ``init()`` called once, in the
   worker's task thread (the thread ``run()`` will use);
3. a watchdog thread that ends the process when a ``run()`` call overruns
   ``retry_settings.timeout`` (the nanny then starts a fresh process, whose ``setup`` calls
   ``init()`` again).

A *shipped* job (workers that do not share the driver's disk, see :mod:`daskscore.shipping`)
first unpacks its code and model into the worker's cache and gets worker-local output, log and
staging folders (:func:`localize`).  A job that asks for worker ``resources`` installs only on
workers that offer them.

``teardown`` calls the script's ``shutdown()`` if it has one and undoes the rest.  Tasks find
the installed job with :func:`get_state`.  A failing ``init()`` does not raise here: it is kept
in the state, written to ``logs/user/error/<worker>.txt``, and reported by every task, so the
driver fails the job at once with the script's own traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from . import script as script_mod
from .cluster import limit_blas_threads
from .config import redact, secret_values
from .errors import InitFailed
from .shipping import read_new, take_files
from .workerjob import WorkerJob, localize, offers

__all__ = ["ScoringPlugin", "WorkerJob", "WorkerState", "get_state", "localize", "offers"]

logger = logging.getLogger(__name__)

#: How often the watchdog looks at the run() call in flight; timeouts are whole seconds in
#: practice, so a quarter of a second is precise enough and costs nothing.
WATCHDOG_PERIOD_S = 0.25
#: How an init error that came before init() (fetching the model or the code) begins.
SETUP_FAILED = "preparing"
#: Exit status of a process ended by the watchdog (distinct from Azure's 42, and from crashes).
TIMEOUT_EXIT_STATUS = 75


def failed_before_init(init_error: str | None) -> bool:
    """Whether a worker's init error is about preparing the job, not the script's init()."""
    return init_error is not None and init_error.startswith(SETUP_FAILED)


def set_environment(job: WorkerJob, saved: dict[str, Any], device: str | None = None) -> str:
    """Set what a scoring script sees, as Azure does; return the model folder made for it.

    ``AZUREML_MODEL_DIR`` is a new temporary folder holding a symlink to the model under its
    own base name; ``AZUREML_BI_OUTPUT_PATH`` and ``job.env`` are set; ``sys.argv`` is the
    script's own; a ``device`` becomes ``CUDA_VISIBLE_DEVICES``.  The values replaced are kept
    in ``saved`` for :func:`restore_environment`.
    """
    env = dict(job.env)
    model_dir = tempfile.mkdtemp(prefix="daskscore-model-")
    if job.model_path:
        model = Path(job.model_path)
        os.symlink(model, Path(model_dir) / model.name, target_is_directory=model.is_dir())
    env["AZUREML_MODEL_DIR"] = model_dir
    env["AZUREML_BI_OUTPUT_PATH"] = job.output
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    for key, value in env.items():
        saved.setdefault(key, os.environ.get(key))
        os.environ[key] = value
    saved["argv"] = list(sys.argv)
    sys.argv = [job.script]
    return model_dir


def restore_environment(saved: dict[str, Any]) -> None:
    """Undo :func:`set_environment`: ``sys.argv`` and the environment variables it replaced."""
    for key, value in saved.items():
        if key == "argv":
            sys.argv = value
        elif value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class WorkerState:
    """One job installed in one worker process."""

    def __init__(
        self,
        job: WorkerJob,
        worker_name: str,
        local_directory: str | None = None,
        device: str | None = None,
        eligible: bool = True,
    ) -> None:
        self.job = job
        self.worker_name = worker_name
        self.local_directory = local_directory or tempfile.gettempdir()
        self.device = device
        #: False on a worker without the job's resources: nothing installed, no task runs here
        self.eligible = eligible
        self.secrets = secret_values(job.env)
        #: how much of each log file a shipped job already sent home (see drain_job)
        self.drained: dict[str, int] = {}
        #: the job's worker-local folders exist (a shipped job's were made by localize)
        self.localized = not job.shipped
        self.module: Any = None
        self.init_error: str | None = None
        self.init_s = 0.0
        self.cancelled = False
        self.model_dir: str | None = None
        # the run() call in flight: (deadline, mini_batch, ledger) or None; set by tasks
        self.in_flight: tuple[float, int, Any] | None = None
        #: held by the task running mini-batches: one run() at a time per process, as in
        #: Azure, even on a worker with several threads (scripts keep one model in a global)
        self.run_lock = threading.Lock()
        self._saved: dict[str, Any] = {}
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._stdout: Any = None
        self._log_handler: logging.Handler | None = None

    # ------------------------------------------------------------------ install / uninstall
    def install(self) -> None:
        """Set up the environment, import the script and call init(); never raises."""
        if self.job.needs_localizing:
            try:
                self.job = localize(self.job, self.local_directory)
                self.localized = True
            except Exception as exc:  # noqa: BLE001 - reported as the job's init() failure
                what = f"the model {self.job.model_url}" if self.job.model_url else "the job"
                self.init_error = redact(
                    f"{SETUP_FAILED} {what} on worker {self.worker_name} failed: "
                    f"{type(exc).__name__}: {exc}",
                    self.secrets,
                )
                return
        job = self.job
        if job.intra_op_threads:
            limit_blas_threads(job.intra_op_threads)  # loaded before the caps, if forked
        self._route_output()
        self._set_environment()
        started = time.perf_counter()
        try:
            self.module = script_mod.import_script(Path(job.code), Path(job.script))
            init = getattr(self.module, "init", None)
            if callable(init):
                init()
            if not callable(getattr(self.module, "run", None)):
                raise AttributeError(f"{job.script} defines no callable run(mini_batch)")
            self._limit_threads()
        except BaseException as exc:  # noqa: BLE001 - the user's code may raise anything
            self.init_error = self.user_traceback(exc)
            self.write_error("init()", script_mod.full_traceback(exc))
        self.init_s = time.perf_counter() - started
        self._watchdog = threading.Thread(
            target=self._watch, name=f"daskscore-watchdog-{job.job_id}", daemon=True
        )
        self._watchdog.start()

    def uninstall(self) -> None:
        self._stop.set()
        if not self.eligible or self._stdout is None and self.module is None:
            return  # nothing was installed (no resources here, or preparing the job failed)
        shutdown = getattr(self.module, "shutdown", None)
        if callable(shutdown) and self.init_error is None:
            try:
                shutdown()
            except BaseException as exc:  # noqa: BLE001
                self.write_error("shutdown()", script_mod.full_traceback(exc))
        script_mod.forget_code(Path(self.job.code))
        sys.modules.pop(Path(self.job.script).stem, None)
        restore_environment(self._saved)
        self._restore_output()
        if self.model_dir:
            shutil.rmtree(self.model_dir, ignore_errors=True)
        if self.job.shipped:
            shutil.rmtree(Path(self.job.staging).parent, ignore_errors=True)

    def drain_logs(self) -> dict[str, bytes]:
        """What this worker's log files gained since the last call (names relative to
        ``logs/``): a shipped job's tasks take them home with their results."""
        if self._stdout is not None:
            self._stdout.flush()
        logs: dict[str, bytes] = {}
        for kind in ("stdout", "error"):
            rel = f"user/{kind}/{self.worker_name}.txt"
            data, self.drained[rel] = read_new(Path(self.job.logs) / rel, self.drained.get(rel, 0))
            if data:
                logs[rel] = data
        return logs

    # ------------------------------------------------------------------ what users see
    def shown(self, text: str) -> str:
        """``text`` as the user may see it: the code folder named as the user knows it, and
        no secret values."""
        job = self.job
        if job.display_code and job.display_code != job.code:
            text = text.replace(job.code, job.display_code)
        return redact(text, self.secrets)

    def user_traceback(self, exc: BaseException) -> str:
        return self.shown(script_mod.user_traceback(exc, Path(self.job.code)))

    def _set_environment(self) -> None:
        self.model_dir = set_environment(self.job, self._saved, self.device)

    def _limit_threads(self) -> None:
        n = self.job.intra_op_threads
        torch = sys.modules.get("torch")
        if n and torch is not None:
            try:
                torch.set_num_threads(n)
            except Exception:  # noqa: BLE001 - best effort
                pass

    def _route_output(self) -> None:
        job = self.job
        path = Path(job.logs) / "user" / "stdout" / f"{self.worker_name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._stdout = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        if self.secrets:
            self._stdout = _Redacting(self._stdout, self.secrets)
        self._saved_streams = (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = self._stdout
        handler = logging.StreamHandler(self._stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        self._saved_root_level = root.level
        root.setLevel(job.logging_level.upper())
        root.addHandler(handler)
        self._log_handler = handler

    def _restore_output(self) -> None:
        if self._log_handler is not None:
            root = logging.getLogger()
            root.removeHandler(self._log_handler)
            root.setLevel(self._saved_root_level)
        if self._stdout is not None:
            sys.stdout, sys.stderr = self._saved_streams
            self._stdout.close()
            self._stdout = None

    # ------------------------------------------------------------------ errors and timeouts
    def write_error(self, context: str, text: str) -> None:
        """Append ``text`` (a whole traceback, say) to this worker's error log, as shown."""
        path = Path(self.job.logs) / "user" / "error" / f"{self.worker_name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {context} failed on {self.worker_name}:\n{self.shown(text)}\n\n")

    def _watch(self) -> None:
        while not self._stop.wait(WATCHDOG_PERIOD_S):
            flight = self.in_flight
            if flight is None or time.monotonic() < flight[0]:
                continue
            _, mini_batch, ledger = flight
            try:
                ledger.timed_out(mini_batch)
                self.write_error(
                    f"run() of mini-batch {mini_batch}",
                    f"timed out after {self.job.timeout:g} s "
                    "(retry_settings.timeout); the worker process is restarted.",
                )
                if self._stdout is not None:
                    self._stdout.flush()
            finally:
                os._exit(TIMEOUT_EXIT_STATUS)


class _Redacting:
    """A text stream that masks secret values before they reach the log file."""

    def __init__(self, stream: Any, secrets: tuple[str, ...]) -> None:
        self._stream = stream
        self._secrets = secrets

    def write(self, text: str) -> int:
        self._stream.write(redact(text, self._secrets))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_STATES: dict[str, WorkerState] = {}


def get_state(job_id: str) -> WorkerState:
    """The job installed in this worker process by :class:`ScoringPlugin`."""
    try:
        return _STATES[job_id]
    except KeyError:
        raise RuntimeError(
            f"daskscore job {job_id} is not installed in this process: its tasks must run on "
            "the cluster whose client installed it. For a DataFrame from daskscore.score(..., "
            "client=c), compute with c.compute(ddf), or inside `with c.as_current():`."
        ) from None


def worker_label(name: Any) -> str:
    """A file-name-safe label for a worker: ``worker-0`` for LocalCluster's, else its address."""
    text = str(name)
    if text.isdigit():
        return f"worker-{text}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace("tcp://", "")).strip("_") or "worker"


class ScoringPlugin(WorkerPlugin):
    """Installs a scoring job in every worker: ``init()`` once per worker process.

    Parameters
    ----------
    job : WorkerJob
        The job; plain data, sent once to every worker (and to workers that join later).
    """

    idempotent = False

    def __init__(self, job: WorkerJob) -> None:
        self.job = job
        self.name = f"daskscore-{job.job_id}"

    async def setup(self, worker: Any) -> None:
        job = self.job
        label = worker_label(worker.name)
        if job.resources and not offers(worker.state.total_resources, job.resources):
            _STATES[job.job_id] = WorkerState(job, label, eligible=False)
            return
        device = None
        if job.gpu_ids and str(worker.name).isdigit():  # an embedded cluster's worker number
            device = job.gpu_ids[int(str(worker.name)) % len(job.gpu_ids)]
        state = WorkerState(job, label, worker.local_directory, device)
        _STATES[job.job_id] = state
        executor = worker.executors.get("default")
        await asyncio.get_running_loop().run_in_executor(executor, state.install)

    async def teardown(self, worker: Any) -> None:
        state = _STATES.pop(self.job.job_id, None)
        if state is None:
            return
        executor = worker.executors.get("default")
        try:
            await asyncio.get_running_loop().run_in_executor(executor, state.uninstall)
        except RuntimeError:  # the executor is already shut down: the worker is closing
            state.uninstall()


def init_report(job_id: str) -> dict[str, Any]:
    """This worker's init() outcome (run with ``Client.run``)."""
    state = _STATES.get(job_id)
    if state is None:
        return {"installed": False}
    return {
        "installed": True,
        "eligible": state.eligible,
        "worker": state.worker_name,
        "error": state.init_error,
        "init_s": state.init_s,
    }


def raise_init_errors(client: Any, job_id: str) -> None:
    """Raise :class:`InitFailed` with the script's traceback if init() failed on any worker."""
    for report in client.run(init_report, job_id).values():
        if report.get("error"):
            raise InitFailed(f"init() failed:\n{report['error']}", user_traceback=report["error"])


def cancel_job(job_id: str) -> bool:
    """Ask this worker's tasks of ``job_id`` to stop after their current mini-batch."""
    state = _STATES.get(job_id)
    if state is not None:
        state.cancelled = True
    return state is not None


def drain_job(job_id: str) -> dict[str, dict[str, bytes]]:
    """A shipped job's files on this worker (run with ``Client.run`` at the end of the job):
    ``logs`` — what its log files gained since the last drain, named relative to ``logs/`` —
    and ``output`` — the files the script wrote into ``AZUREML_BI_OUTPUT_PATH``."""
    state = _STATES.get(job_id)
    if state is None or not state.job.shipped or not state.eligible or not state.localized:
        return {}  # nothing installed here (yet): its folders are not this worker's own
    return {"logs": state.drain_logs(), "output": take_files(Path(state.job.output))}
