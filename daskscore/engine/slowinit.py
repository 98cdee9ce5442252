"""An install that does not end: ``init()`` waiting on a lock, a download, a device.

Azure's YAML has no timeout for ``init()``, and a model download may rightly take many
minutes, so by default the job waits as long as ``init()`` runs.  It does not wait silently:
:func:`register_watched` registers the job's plugin on a thread and, from the calling thread,
asks the workers still installing it where they are after :data:`SLOW_INIT_S`, then at twice,
four times that...  The answer (:func:`daskscore.worker.plugin.installing`) names the worker,
the stage (``import``, ``init()``) and the line of the script it is on; it goes into the job
log and onto the terminal.

With ``init_timeout`` (``--init-timeout SECONDS``), an install that runs longer fails the job
as an ``init()`` that raised would: :class:`~daskscore.errors.InitFailed`, whose text shows
where ``init()`` was when it was given up, as a traceback shows it.  A worker whose ``init()``
holds the GIL (native code that does not release it) cannot answer: it is named as such.

Ctrl-C stays prompt throughout: the calling thread waits in short steps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daskscore.engine.connection import SchedulerWatch
from daskscore.protocol import INIT_TIMED_OUT
from daskscore.worker.plugin import installing

logger = logging.getLogger("daskscore")

#: The first note on a slow install comes after this many seconds; the next ones at twice,
#: four times...  that.
SLOW_INIT_S = 60.0
#: How long the workers are given to say where their install is.
ASK_S = 5.0
#: How often the calling thread looks at the clock while the plugin is registered.
STEP_S = 0.25
#: Frames of the install shown in an error, innermost last.
SHOWN_FRAMES = 8

Answer = dict[str, Any]


class InstallDied(Exception):
    """A worker process died installing the script (its install mark says so) while the
    registration of the plugin still waits on the workers."""


class InitTimedOut(Exception):
    """The install ran past ``init_timeout``: ``text`` says where each worker was, ``workers``
    are the addresses of the workers still installing (or that did not answer)."""

    def __init__(self, text: str, workers: list[str]) -> None:
        super().__init__(text)
        self.text, self.workers = text, workers


def register_watched(
    register: Callable[[], Any],
    client: Any,
    job_id: str,
    script: str,
    init_timeout: float | None,
    notify: Callable[[str], None] | None = None,
    watch: SchedulerWatch | None = None,
    died: Callable[[], bool] | None = None,
) -> None:
    """Call ``register()`` (which returns once every worker installed the script) on a
    thread; meanwhile note the installs that last (see the module's doc), and raise
    :class:`InitTimedOut` past ``init_timeout`` seconds.  What ``register()`` raises is
    raised here.  ``watch``: the client's connection, looked at every step: a client
    without its scheduler asks the workers nothing (the question would wait out Dask's
    connect timeout), and ends the install with
    :class:`~daskscore.errors.ClusterLost` after the watch's limit.  ``died()``, asked every
    step, says that a worker process died installing: :class:`InstallDied` is raised at once
    (Dask's broadcast of the plugin learns of it when the dead worker's connection is seen
    closed, seconds later, its nanny meanwhile restarting it into the same ``init()``)."""
    done = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            register()
        except BaseException as exc:  # noqa: BLE001 - raised in the calling thread
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="daskscore-install", daemon=True).start()
    started = time.monotonic()
    note_at = SLOW_INIT_S
    while not done.wait(STEP_S):
        if died is not None and died():
            raise InstallDied
        if watch is not None:
            watch.check(time.monotonic())
            if watch.since is not None:
                continue  # (no scheduler to ask the workers through)
        elapsed = time.monotonic() - started
        if init_timeout is not None and elapsed >= init_timeout:
            answers, silent = ask(client, job_id)
            if done.is_set():
                break  # (it ended as the workers were asked)
            raise InitTimedOut(
                timed_out_text(answers, silent, script, init_timeout),
                [a["address"] for a in answers] + silent,
            )
        if elapsed >= note_at:
            note_at *= 2
            answers, silent = ask(client, job_id)
            if answers or silent:
                text = slow_note(answers, silent, elapsed, init_timeout)
                logger.warning("%s", text)
                if notify is not None:
                    notify(text)
    if failed:
        raise failed[0]


def ask(client: Any, job_id: str) -> tuple[list[Answer], list[str]]:
    """What the workers still installing ``job_id`` say (each answer with its ``address``),
    and the addresses of the workers that did not answer within :data:`ASK_S`."""
    try:
        workers = list(client.scheduler_info(n_workers=-1)["workers"])
    except Exception:  # noqa: BLE001 - nothing to ask then
        logger.debug("listing the workers failed", exc_info=True)
        return [], []
    found: dict[str, Any] = {}

    def one(address: str) -> None:
        try:
            found[address] = client.run(installing, job_id, workers=[address]).get(address)
        except Exception:  # noqa: BLE001 - gone meanwhile: no answer
            found[address] = None

    threads = [threading.Thread(target=one, args=(a,), daemon=True) for a in workers]
    for thread in threads:
        thread.start()
    until = time.monotonic() + ASK_S
    for thread in threads:
        thread.join(max(0.0, until - time.monotonic()))
    answers = [{**found[a], "address": a} for a in workers if found.get(a)]
    answers.sort(key=lambda a: str(a.get("worker")))
    return answers, sorted(a for a in workers if a not in found)


def _at(answer: Answer) -> str:
    """``score.py, line 7, in init: time.sleep(1000)``: the innermost frame of an answer."""
    where = answer.get("where") or []
    if not where:
        return "at a place not known"
    filename, line, name, source = where[-1]
    return f"at {Path(filename).name}, line {line}, in {name}" + (f": {source}" if source else "")


def _who(answer: Answer) -> str:
    return str(answer.get("worker"))


def _silent(silent: list[str]) -> str:
    return (
        f"{', '.join(silent)} did not say where {'it is' if len(silent) == 1 else 'they are'} "
        f"within {ASK_S:g} s: a worker whose init() holds the GIL (a call into native code "
        "that does not release it) cannot answer"
    )


def slow_note(
    answers: list[Answer], silent: list[str], elapsed: float, init_timeout: float | None
) -> str:
    """The note on an install that lasts: who, at what stage, where."""
    places: dict[tuple[str, str], list[str]] = {}
    for answer in answers:
        places.setdefault((str(answer.get("stage")), _at(answer)), []).append(_who(answer))
    parts = [
        f"{' and '.join(who)} {'is' if len(who) == 1 else 'are'} in {stage} ({at})"
        for (stage, at), who in places.items()
    ]
    if silent:
        parts.append(_silent(silent))
    limit = (
        f"--init-timeout ({init_timeout:g} s) gives it up"
        if init_timeout is not None
        else "the job waits as long as init() runs (--init-timeout SECONDS gives it up)"
    )
    doing = "; ".join(parts)
    return f"the scoring script has been installing for {elapsed:.0f} s: {doing}; {limit}."


def timed_out_text(
    answers: list[Answer], silent: list[str], script: str, init_timeout: float
) -> str:
    """The error of an install given up: a first line for the verdict, then the stack of
    each worker's install as a traceback shows it, then what to do."""
    stage = next((a.get("stage") for a in answers), "init()")
    what = {
        "import": f"The import of the scoring script {script}",
        "preparing": f"Preparing the job for {script} (its model or code fetched)",
    }.get(str(stage), f"init() of the scoring script {script}")
    where = f" ({_at(answers[0])})" if answers else ""
    who = ", ".join([_who(a) for a in answers] + silent)
    lines = [f"{what} {INIT_TIMED_OUT} ({init_timeout:g} s) on {who}{where}"]
    for answer in answers:
        lines.append(
            f"Stack of {answer.get('stage')} on {_who(answer)} when it was given up after "
            f"{float(answer.get('seconds') or 0):.0f} s (most recent call last):"
        )
        for filename, line, name, source in (answer.get("where") or [])[-SHOWN_FRAMES:]:
            lines.append(f'  File "{filename}", line {line}, in {name}')
            if source:
                lines.append(f"    {source}")
    if silent:
        lines.append(_silent(silent) + ".")
    lines.append(
        "Its worker processes were restarted. If init() needs longer (a model download, "
        "say), raise --init-timeout; otherwise the line above is what it waits for (a lock, "
        "a server, a device)."
    )
    return "\n".join(lines)
