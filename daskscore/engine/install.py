"""Installing the scoring script on a cluster's workers (``init()`` once per worker process),
and a worker process that dies doing it.

:class:`ScriptInstall` registers the job's :class:`~daskscore.worker.plugin.ScoringPlugin`
(its ``setup`` imports the script and calls ``init()`` in every worker) and raises
:class:`~daskscore.errors.InitFailed` with the script's traceback when ``init()`` raised.

A worker process that *dies* there — ``os._exit``, a crash in native code, killed for its
memory — leaves no traceback, and Dask reports only a closed connection (the scheduler's
broadcast of the plugin fails).  The job fails the same way then: an ``InitFailed`` whose text
says which worker process died, during what (``init()``, the import, preparing the job), how
it ended (its exit code, the signal, out of memory) and what the script printed before, from
what outlives the process (:mod:`daskscore.worker.deaths`).  The plugin is taken off the
scheduler's list first, without waiting on any worker: the nanny starts its worker again, and
every new worker process would run the same ``init()`` into the same death.  So the death is
looked for while Dask's broadcast of the plugin waits: an install mark whose process no longer
runs (:func:`~daskscore.worker.deaths.mark_gone`: the workers share the driver's machine) is
one, whatever its exit status; else Dask's closed connection says it.  A worker that its
nanny restarts during the job (after a ``run()`` that killed it) and whose ``init()`` then kills
it fails the job the same way: :meth:`ScriptInstall.check`, called by the dispatcher.

A driver killed mid-job (``kill -9``, a lost machine) never unregisters its plugin: the
scheduler would keep it for new workers, and the workers its script, its model in memory, for
the cluster's life.  So each install first removes the plugins of jobs whose client is no longer
connected (:func:`~daskscore.worker.plugin.claim_plugin`): their teardown runs on every worker
(the script is uninstalled, or kept for the next job with its warm key).  A job whose client is
connected keeps its install, running or not.  On the warm cluster, the worker processes in which
another script was installed, none of it live, are then replaced by fresh ones
(:mod:`daskscore.engine.fresh`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from daskscore.engine import probe
from daskscore.engine.connection import SchedulerWatch, connected, orphan_grace
from daskscore.engine.fresh import replace_used_workers
from daskscore.engine.initlog import printed
from daskscore.engine.memory import MemoryDeaths
from daskscore.engine.slowinit import InitTimedOut, InstallDied, register_watched
from daskscore.errors import ClusterLost, InitFailed
from daskscore.protocol import IMPORT_FAILED, INIT_DIED, SETUP_FAILED, WorkerJob
from daskscore.worker.deaths import (
    describe_exit,
    exit_cause,
    mark_gone,
    nanny_exits,
    read_marks,
    reset_marks,
)
from daskscore.worker.plugin import (
    ScoringPlugin,
    claim_plugin,
    forget_plugin,
    remove_plugin,
    remove_plugins,
)

logger = logging.getLogger("daskscore")

#: How long the driver waits for a dead worker process's nanny to say how it ended.
WAIT_S = 5.0
POLL_S = 0.1

T = TypeVar("T")


class ScriptInstall:
    """The job's script on ``client``'s workers: :meth:`install`, then :meth:`uninstall`.

    ``staging``: the job's staging folder, where workers that share the driver's disk leave
    their install marks; ``fresh``: replace by fresh processes the workers that must install
    it over another script (:mod:`daskscore.engine.fresh`); ``memory_limit``: the workers'
    memory limit as the user gave it (``--worker-memory``), for the error of a worker killed
    for its memory; ``watch``: the job's watch on its scheduler, through which the install
    asks the cluster (one lost meanwhile ends it with :class:`~daskscore.errors.ClusterLost`,
    not a worker's death).
    """

    def __init__(
        self,
        client: Any,
        job: WorkerJob,
        staging: Path,
        memory_limit: str | int | None = None,
        *,
        init_timeout: float | None = None,
        notify: Callable[[str], None] | None = None,
        watch: SchedulerWatch | None = None,
        fresh: bool = False,
    ) -> None:
        self.client, self.watch = client, watch
        #: worker processes that another script was installed in are replaced by fresh ones
        #: first (the warm cluster's: engine.fresh), and the pids of those replaced
        self.fresh, self.replaced = fresh, set[int]()
        self.job = job
        self.staging = staging
        self.memory_limit = memory_limit
        #: seconds an install may take before the job gives it up (None: no limit), and
        #: where a note on a slow one goes besides the job log (the terminal)
        self.init_timeout, self.notify = init_timeout, notify
        self.name = f"daskscore-{job.job_id}"
        #: the scheduler holds the plugin: workers that start install it
        self.registered = False
        #: workers may hold it still (the scheduler no longer does)
        self.on_workers = False
        #: where installing worker processes leave their marks (None: nowhere), and since when
        self.marks: Path | None = None
        self.since = time.time()

    def install(self) -> bool:
        """Install the script on every worker (``init()`` runs there); raise
        :class:`InitFailed` when it raised, or killed its process, on any worker.  Return
        whether every worker that runs the job reused a script an earlier job initialised."""
        try:
            self.marks = reset_marks(self.staging)
        except OSError:  # the death of a worker process is explained with less
            self.marks = None
        self.since = time.time()
        self._remove_orphans()
        if self.fresh:  # (before the install's time counts: their ends are not its deaths)
            self.replaced = replace_used_workers(self.client, self.job, self._ask)
            self.since = time.time()
        try:
            self.registered = self.on_workers = True
            return self._ask(self._register)
        except InitTimedOut as exc:
            self._gave_up(exc)
        except OSError:  # (CommClosedError) a worker's connection closed: its process died
            if self._died_elsewhere():  # (another job's run() ended it: its restart installs)
                return self._ask(lambda: probe.raise_init_errors(self.client, self.job.job_id))
            logger.warning(
                "a worker process died while the scoring script was installed", exc_info=True
            )
        self._died()

    def _register(self) -> bool:
        try:
            register_watched(
                lambda: self.client.register_plugin(ScoringPlugin(self.job)),
                self.client,
                self.job.job_id,
                Path(self.job.script).name,
                self.init_timeout,
                self.notify,
                self.watch,
                self._install_died,
            )
        except (InstallDied, OSError) as exc:
            # a worker process that died installing, seen by its mark: the plugin is taken off
            # at once (InitFailed), its nanny restarting it meanwhile into the same init()
            if not isinstance(exc, InstallDied) and not self._install_died():
                raise  # (install() asks the nannies whose death it was)
            logger.warning("a worker process died while it installed the scoring script")
            self._died()
        return probe.raise_init_errors(self.client, self.job.job_id)

    def _install_died(self) -> bool:
        """Whether a worker process died installing the script: its install mark is left, and
        its process is gone (:func:`~daskscore.worker.deaths.mark_gone`, where the driver can
        tell: the same host)."""
        return self.marks is not None and _gone(read_marks(self.marks))

    def _ask(self, question: Callable[[], T]) -> T:
        """``question()`` of the cluster, through the job's watch on its scheduler (a client
        that lost it asks nothing, and ends the job with ``ClusterLost``)."""
        return question() if self.watch is None else self.watch.ask(question)

    def _died_elsewhere(self) -> bool:
        """Whether the worker process that died while the script was sent did not die in this
        job's install: on workers that share the driver's disk, an install leaves its mark
        from its first step, and no process that died has one (it died in another job's
        ``run()`` on a shared client, this install waiting its turn; or another job on the
        warm cluster had it replaced by a fresh process: :mod:`daskscore.engine.fresh`).  Its
        nanny's new process installs the script as it joins, as a worker joining mid-job
        does."""
        if self.marks is None or self.job.shipped:  # (no marks to tell: a death is ours)
            return False
        found, exits, _ = _look_until(
            self.client,
            self.marks,
            self.since,
            lambda f, e, _: bool(e) or _gone(f),
            self.replaced,
        )
        if not exits or _gone(found) or any(m.get("pid") in exits for m in found):
            return False
        logger.warning(
            "a worker process ended while the scoring script was sent to it, not in its install "
            "(no install of this job had started in it: another job's run() ended it, or another "
            "job had it replaced by a fresh one); its nanny's new process installs the script as "
            "it joins"
        )
        return True

    def _remove_orphans(self) -> None:
        """Remove from the scheduler and the workers the plugins of jobs whose client is gone
        (their ``shutdown()`` runs, or their script is parked for its warm key), noting this
        job's plugin as its client's."""
        try:
            orphans = self._ask(
                lambda: self.client.run_on_scheduler(
                    claim_plugin, self.name, self.client.id, orphan_grace()
                )
            )
        except ClusterLost:
            raise
        except Exception:  # noqa: BLE001 - no daskscore on the scheduler: nothing to claim
            logger.debug("looking for the plugins of gone drivers failed", exc_info=True)
            return
        if orphans:
            logger.info("removing the scripts of jobs whose driver is gone: %s", orphans)
            try:
                self.client.run(remove_plugins, orphans, on_error="ignore")
            except Exception:  # noqa: BLE001 - workers may be gone already
                logger.debug("removing the plugins of gone drivers failed", exc_info=True)

    def check(self) -> None:
        """Raise :class:`InitFailed` when a worker process died installing the script since
        :meth:`install` — one its nanny restarted during the job (after a ``run()`` that
        killed it) into an ``init()`` that kills it.  Cheap when no worker is installing it
        (a listing of an empty folder): called as tasks are lost, and now and then."""
        if self.marks is None or not any(self.marks.glob("*.json")):
            return
        if not self._install_died():  # (else: the nannies say, where the driver cannot tell)
            if not connected(self.client):
                return  # (no scheduler to ask: the job's SchedulerWatch says what happened)
            found, exits, _ = _look(
                self.client, self.marks, time.time() - self.since + 1.0, self.replaced
            )
            if not any(m.get("pid") in exits for m in found):
                return
        logger.warning("a restarted worker process died while it installed the script")
        self._died()

    def _died(self) -> NoReturn:
        self._forget()  # before its nanny starts it into the same init() again
        text, worker = explain(
            self.client, self.job, self.marks, self.since, self.memory_limit, self.replaced
        )
        if worker:
            _append(Path(self.job.logs) / "user" / "error" / f"{worker}.txt", text)
        self.uninstall()
        raise InitFailed(f"init() failed:\n{text}", user_traceback=text)

    def _gave_up(self, exc: InitTimedOut) -> NoReturn:
        """An install ran past ``init_timeout``: no worker process installs the plugin from
        now on, the workers still in it are restarted (their nannies end the hung
        ``init()``), the others' ``shutdown()`` runs (on a thread: a worker that could not be
        restarted would hold the call), and the job fails as an ``init()`` that raised."""
        logger.warning("%s", exc.text)
        self._forget()
        try:
            self.client.restart_workers(exc.workers, raise_for_error=False)
        except Exception:  # noqa: BLE001 - a worker without a nanny keeps its init() running
            logger.warning("restarting the workers stuck in init() failed", exc_info=True)
        threading.Thread(target=self.uninstall, name="daskscore-uninstall", daemon=True).start()
        raise InitFailed(exc.text, user_traceback=exc.text)

    def _forget(self) -> None:
        """Take the plugin off the scheduler's list at once, without waiting on the workers:
        worker processes that start from now on do not install it."""
        try:
            self.client.run_on_scheduler(forget_plugin, self.name)
        except Exception:  # noqa: BLE001 - no daskscore on the scheduler: unregistered later
            logger.debug("taking the plugin off the scheduler's list failed", exc_info=True)
            return
        self.registered = False

    def uninstall(self) -> None:
        """Unregister the job's plugin (the script's ``shutdown()`` runs on every worker)."""
        try:
            if self.registered:
                self.client.unregister_worker_plugin(self.name)
            elif self.on_workers:  # (after _forget: from the workers that hold it)
                self.client.run(remove_plugin, self.name, on_error="ignore")
        except Exception:  # noqa: BLE001 - workers may be gone already
            logger.debug("unregistering the plugin failed", exc_info=True)
        self.registered = self.on_workers = False


def explain(
    client: Any,
    job: WorkerJob,
    marks: Path | None,
    since: float,
    memory_limit: str | int | None = None,
    replaced: Collection[int] = (),
) -> tuple[str, str | None]:
    """The error of a job whose worker process died while the script was installed, and the
    worker it names (None: not known); waits up to :data:`WAIT_S` for its nanny to say how
    the process ended (``replaced``: processes replaced by fresh ones, not deaths)."""
    found, exits, alive = _look_until(client, marks, since, _told, replaced)
    dead = [m for m in found if m.get("pid") in exits or mark_gone(m)]
    if not dead:  # no nanny said: the marks of processes that are gone
        dead = [m for m in found if m.get("pid") not in alive][:1]
    mark = dead[0] if dead else None
    pid = mark.get("pid") if mark else None
    status = exits.get(pid) if pid is not None else next(iter(exits.values()), None)
    memory = MemoryDeaths(client, memory_limit).during_init(pid, since)
    workers = sorted({str(m.get("worker")) for m in dead})
    text = _message(job, mark, status, memory, workers, found)
    return text, mark.get("worker") if mark else None


def _gone(found: list[dict[str, Any]]) -> bool:
    return any(mark_gone(m) for m in found)


def _told(found: list[dict[str, Any]], exits: dict[int, int], alive: set[int]) -> bool:
    """Whether the nannies have said what they will of the first dead process: its exit
    status, or (Dask's nanny logs none for an exit with status 0) that its nanny has let it go
    (the pid it reports is no longer that one's)."""
    dead = [m for m in found if m.get("pid") in exits or mark_gone(m)]
    if not dead:
        return not found and bool(exits)
    pid = dead[0].get("pid")
    return pid in exits or (bool(alive) and pid not in alive)


def _look_until(
    client: Any,
    marks: Path | None,
    since: float,
    enough: Callable[[Any, Any, Any], Any],
    replaced: Collection[int] = (),
) -> tuple[list[dict[str, Any]], dict[int, int], set[int]]:
    """:func:`_look` again every :data:`POLL_S` until ``enough(marks, exits, alive)`` (the
    nannies have said how the processes ended), for :data:`WAIT_S` at most."""
    give_up = time.monotonic() + WAIT_S
    while True:
        found, exits, alive = _look(client, marks, time.time() - since + 1.0, replaced)
        if enough(found, exits, alive) or time.monotonic() >= give_up:
            return found, exits, alive
        time.sleep(POLL_S)


def _look(
    client: Any, marks: Path | None, window: float, replaced: Collection[int] = ()
) -> tuple[list[dict[str, Any]], dict[int, int], set[int]]:
    """The install marks left, the exit statuses of worker processes that died in the last
    ``window`` seconds (by pid; not those ``replaced`` by fresh ones), and the pids of the
    worker processes alive now."""
    found = read_marks(marks) if marks is not None else []
    reports = [nanny_exits()]  # (the embedded cluster's nannies are in this process)
    try:
        reports += list(client.run(nanny_exits, nanny=True, on_error="ignore").values())
    except Exception:  # noqa: BLE001 - what this process's nannies know is still there
        logger.debug("asking the nannies how their workers ended failed", exc_info=True)
    exits: dict[int, int] = {}
    alive: set[int] = set()
    for report in reports:
        if not isinstance(report, dict):
            continue
        if report.get("pid"):
            alive.add(int(report["pid"]))
        for pid, (status, age) in (report.get("exits") or {}).items():
            if age <= window and int(pid) not in replaced:
                exits[int(pid)] = int(status)
    return found, exits, alive


def _message(
    job: WorkerJob,
    mark: dict[str, Any] | None,
    status: int | None,
    memory: str,
    workers: list[str],
    found: Sequence[dict[str, Any]] = (),
) -> str:
    """The init error: a first line for the verdict, what the script printed, and a paragraph
    on how the process ended and where to look (``found``: every install mark left)."""
    script = Path(job.script).name
    stage = (mark or {}).get("stage")
    ended = "killed for its memory" if memory else describe_exit(status, number=False)
    ended = ended or "how is not known"
    if stage == "import":
        head = f"{IMPORT_FAILED} {script} failed: its worker process died ({ended})"
        during = f"the import of {script}"
    elif stage == "preparing":
        head = f"{SETUP_FAILED} the job failed: its worker process died ({ended})"
        during = "the preparation of the job (the model or the code fetched)"
    else:
        where = "init()" if stage else "init() (or its import)"
        head = f"{where} of the scoring script {script} {INIT_DIED} ({ended})"
        during = f"{where} of {script}"
    who = (
        f"The worker process {mark.get('pid')} ({mark.get('worker')})"
        if mark
        else "A worker process"
    )
    also = [w for w in workers if not mark or w != str(mark.get("worker"))]
    too = f" ({', '.join(also)} too)" if also else ""
    paragraph = (
        f"{who} ended during {during}{too} without a Python exception, so there is no "
        f"traceback: {_cause(status, memory)}. To see where it stops, run the import and "
        "init() in this process with `daskscore validate` (under `python -X faulthandler -m "
        "daskscore validate ...`, a crash in native code prints the Python stack where it "
        "happened)."
    )
    return "\n".join([head, *printed(mark, job, found), paragraph])


def _cause(status: int | None, memory: str) -> str:
    """How the process ended, in words, and what usually does that."""
    if memory:
        return (
            f"{memory}; init() needs more memory than that (give the workers more with "
            "--worker-memory, or load less)"
        )
    if status is None:
        return (
            "how it ended is not known here: no nanny of the cluster said (Dask's nanny says "
            "nothing of a process that exits with status 0: os._exit(0), or a library that "
            "ends its process without an error)"
        )
    return exit_cause(status, "init()")


def _append(path: Path, text: str) -> None:
    """Append ``text`` to a worker's error log, as the worker writes a raised init()."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} init() failed: the worker process died:\n{text}\n\n")
    except OSError:
        logger.warning("cannot write %s", path, exc_info=True)
