"""A live display of ``score(...).compute()`` in a Jupyter notebook.

The DataFrame of :func:`daskscore.score` is computed by Dask, not by daskscore, so there is no
loop of ours to draw a bar from.  Instead each partition's task tells the session as it goes:
a worker logs a small event on the topic ``daskscore-progress-<job>`` when a partition starts
(:func:`partition_started`) and when each of its mini-batches is done
(:func:`mini_batch_done`), through Dask's own event log (``Worker.log_event``).  In a Jupyter
kernel, :class:`LiveScore` subscribes to that topic and draws the same HTML display as
:func:`daskscore.run` (:class:`daskscore.ui.progress.Progress`): mini-batches, items, items/s,
failures, ETA.

One display per notebook cell that computes: the first event of a cell opens it, the end of
the cell (IPython's ``post_run_cell``) marks it done.  The events arrive on the client's
event-loop thread, whose output ipykernel would send to the cell that started that thread (the
one that made the client); the display is drawn with the running cell's header instead (taken
when the cell starts, set for the drawing thread alone with the display publisher's
``set_thread_parent``; a kernel without it sends a thread's output to the running cell).  The
totals are the whole DataFrame's, so a cell that computes part of it (``.head()``) ends short
of 100 %.  Outside a kernel nothing is drawn, and the events cost a few hundred bytes per
mini-batch.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from daskscore import _compat
from daskscore.engine.work import planned_total
from daskscore.protocol import MiniBatchRecord
from daskscore.ui.progress import Progress, in_jupyter_kernel

PROGRESS_TOPIC = "daskscore-progress"


def topic(job_id: str) -> str:
    return f"{PROGRESS_TOPIC}-{job_id}"


def _log(job_id: str, message: dict[str, Any]) -> None:
    try:
        from distributed import get_worker

        get_worker().log_event(topic(job_id), message)
    except Exception:  # noqa: BLE001 - progress is best effort (and nothing off a worker)
        pass


def partition_started(job_id: str, partition: int) -> None:
    """Worker side: a partition of the session's DataFrame starts (opens the display)."""
    _log(job_id, {"partition": partition})


def mini_batch_done(job_id: str, partition: int, mb: int, final: MiniBatchRecord) -> None:
    """Worker side: mini-batch ``mb`` of a partition has its final try."""
    _log(
        job_id,
        {
            "partition": partition,
            "mini_batch": mb,
            "items": int(final.total),
            "failed": not final.done,  # (every try failed)
            "partial": bool(final.done and final.failed),  # (run() returned too few)
        },
    )


class LiveScore:
    """Draws the progress of a session's computations in a notebook, one display per cell.

    Parameters
    ----------
    client : distributed.Client
        The session's client (its event topic is subscribed to).
    job_id : str
        The session's job id.
    work : sequence
        The session's mini-batches (their count and planned items are the totals).
    display : callable, optional
        IPython's ``display`` (``display(obj, display_id=True)`` returns a handle); None:
        drawn on ``stream`` (a terminal's bar, or progress lines) instead.
    events : IPython.core.events.EventManager, optional
        Where ``pre_run_cell``/``post_run_cell`` are registered; without it the display is
        closed by :meth:`end_cell` only.
    publisher : IPython's display publisher, optional
        Whose running cell the display goes to (``shell.display_pub``).
    stream : text stream, optional
        Where it draws without ``display`` (outside a notebook: ``sys.stderr``); there is no
        cell there, so a display ends when every mini-batch of the session has been seen.
    """

    def __init__(
        self,
        client: Any,
        job_id: str,
        work: Sequence[Any],
        *,
        display: Callable[..., Any] | None,
        events: Any = None,
        publisher: Any = None,
        stream: TextIO | None = None,
    ) -> None:
        self.client = client
        self.topic = topic(job_id)
        self.total_mini_batches = len(work)
        self.total_items = planned_total(work)
        self._display = display
        self._stream = stream
        self._events = events
        self._publisher = publisher
        self._cell = _running_cell(publisher)
        self._lock = threading.Lock()
        self._armed = True  # (made inside a cell: score(...).compute() in one cell is shown)
        self._progress: Progress | None = None
        self._seen: set[int] = set()
        client.subscribe_topic(self.topic, self._on_event)
        if events is not None:
            events.register("pre_run_cell", self.start_cell)
            events.register("post_run_cell", self.end_cell)

    @classmethod
    def for_session(
        cls, client: Any, job_id: str, work: Sequence[Any], progress: bool | None
    ) -> LiveScore | None:
        """The display ``progress`` asks for: None (the default) draws in a Jupyter kernel
        only; True also on standard error elsewhere (a driver script, a terminal); False
        draws nothing (and the workers send no progress events)."""
        if progress is False:
            return None
        if in_jupyter_kernel():
            return cls.in_kernel(client, job_id, work)
        if progress:
            return cls(client, job_id, work, display=None, stream=sys.stderr)
        return None

    @classmethod
    def in_kernel(cls, client: Any, job_id: str, work: Sequence[Any]) -> LiveScore | None:
        """A live display when this process is a Jupyter kernel; else None."""
        if not in_jupyter_kernel():
            return None
        try:
            from IPython import get_ipython
            from IPython.display import display

            shell = get_ipython()
            return cls(
                client,
                job_id,
                work,
                display=display,
                events=shell.events,
                publisher=getattr(shell, "display_pub", None),
            )
        except Exception:  # noqa: BLE001 - no display is better than no session
            return None

    def start_cell(self, *_: Any) -> None:
        """A cell starts: its first event opens a new display."""
        with self._lock:
            self._armed = True
            self._cell = _running_cell(self._publisher)

    def _on_event(self, event: Any) -> None:
        msg = event[1] if isinstance(event, tuple) else event
        if not isinstance(msg, dict):
            return
        with self._lock:
            if not self._armed:
                return  # (a late event of a cell that has ended)
            first = self._progress is None
            if first:
                self._progress = Progress(
                    self.total_mini_batches,
                    self.total_items,
                    display=self._display,
                    stream=self._stream,
                )
            progress = self._progress
            assert progress is not None
            mb = msg.get("mini_batch")
            if mb is not None and int(mb) not in self._seen:  # (a partition run again: once)
                self._seen.add(int(mb))
                failed, partial = bool(msg.get("failed")), bool(msg.get("partial"))
                progress.add_done(1, int(msg.get("items") or 0), failed, partial)
            with _drawing_for(self._publisher, self._cell):
                progress.draw(force=first)
            # (no cells outside a notebook: the display ends with the last mini-batch)
            ended = self._events is None and len(self._seen) >= self.total_mini_batches
        if ended:
            self.end_cell()
            with self._lock:
                self._armed = True  # (a later compute opens a new display)

    def end_cell(self, *_: Any) -> None:
        """The cell has ended: its display shows its final counts."""
        with self._lock:
            progress, self._progress = self._progress, None
            self._armed = False
            self._seen = set()
        if progress is not None:
            progress.close()

    def close(self) -> None:
        """Stop listening (the session closes)."""
        self.end_cell()
        if self._events is not None:
            for name, hook in (("pre_run_cell", self.start_cell), ("post_run_cell", self.end_cell)):
                try:
                    self._events.unregister(name, hook)
                except ValueError:
                    pass
        try:
            _compat.unsubscribe_topic(self.client, self.topic)
        except Exception:  # noqa: BLE001 - the cluster may be gone
            pass


def _running_cell(publisher: Any) -> Any:
    """The header of the cell running now (called on the kernel's main thread)."""
    try:
        return dict(publisher.parent_header) if publisher is not None else None
    except Exception:  # noqa: BLE001 - another front end's publisher: none
        return None


@contextmanager
def _drawing_for(publisher: Any, cell: Any) -> Iterator[None]:
    """Output of this thread goes to ``cell`` while drawing."""
    setter = getattr(publisher, "set_thread_parent", None)
    if not cell or not callable(setter):
        yield
        return
    token = setter(cell)
    try:
        yield
    finally:
        publisher.reset_thread_parent(token)
