"""Fetching a task's mini-batch inputs ahead of ``run()``: :class:`TaskInputs`.

What ``run()`` receives must first be *fetched*: remote files downloaded into a scratch folder,
tabular splits read into DataFrames (local files in file mode need nothing: their paths are
the argument).  A task runs its mini-batches one after another, so the fetching of mini-batch
k+1 can overlap ``run()`` of k: a :class:`Prefetcher` (one daemon thread per task) fetches the
task's mini-batches in order, at most ``WorkerJob.prefetch`` of them ahead of the one being run
and, beyond the first, only while what it holds is under ``WorkerJob.prefetch_bytes`` (file
sizes, DataFrame memory; so it holds at most one mini-batch above the budget).  The task's
thread takes them in order.  Downloads, and pyarrow's parsing, mostly release the GIL.

The contract of a mini-batch does not change:

* ``run()`` gets the same argument, in the same order, each once: a list of local paths, or a
  DataFrame.  Tabular splits are read with :class:`~daskscore.io.splitreader.SplitReader`
  (runs of consecutive CSV splits parsed once, each split's frame as ``read_split`` gives it).
* A fetch that fails is that mini-batch's failure, raised when its turn comes, inside its try,
  exactly as a failing fetch in the task's thread was (the same exception): never earlier,
  never charged to another mini-batch.  A download takes at most the try's
  ``retry_settings.timeout`` (from its start, ahead or not): past it, fsspec cancels it on its
  event loop (no thread is left waiting), its scratch folder is removed, and the try fails with
  an :class:`~daskscore.errors.InputError` that says so (retried like any failed fetch).
  Nothing is written to the ledger before ``run()``, so a process that dies (or is ended by
  the watchdog) while prefetching loses nothing.
* A retry gets the files of the failed try if they are all still there, unchanged; otherwise
  (and always in tabular mode: ``run()`` may have changed its DataFrame) it fetches again.
* Scratch folders (``daskscore-batch-*``, in the worker's local directory, which Dask removes
  should the process die, as the model folder is) go when their mini-batch is done; when the
  task stops early (cancelled, shipped task full, an exception), :meth:`TaskInputs.close`
  removes what was fetched ahead and not used, and a fetch still under way removes its own
  when it ends.

With ``prefetch`` 0, or when nothing needs fetching (local files), or a task of one mini-batch,
or a task of small CSV splits (below :data:`MIN_PREFETCH_SPLIT_BYTES` on average: each is a
slice of a run parsed once, and a second thread doing pandas work takes the GIL from ``run()``),
no thread is started: each mini-batch is fetched in the task's thread when its turn comes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from daskscore.io import storage, tabular
from daskscore.io.splitreader import SplitReader, read_one

Work = list[str] | tabular.Split


@dataclass
class Fetched:
    """A mini-batch's fetched input: ``run()``'s argument, and what it holds on disk."""

    argument: Any
    #: a scratch folder to remove once the mini-batch is done
    scratch: str | None = None
    #: what it weighs, against the prefetch budget
    nbytes: int = 0
    #: downloaded files: ``(path, size, mtime_ns)`` each, to tell whether a retry can reuse them
    stamps: tuple[tuple[str, int, int], ...] = ()

    def again(self) -> Fetched | None:
        """The same input for another try (a new list of the same files), or None when it must
        be fetched again: a DataFrame (``run()`` may have changed it), or files that are gone
        or changed."""
        if not self.stamps:
            return None
        for path, size, mtime in self.stamps:
            try:
                st = os.stat(path)
            except OSError:
                return None
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                return None
        return Fetched(list(self.argument), self.scratch, self.nbytes, self.stamps)

    def release(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def needs_fetch(work: Work) -> bool:
    """Whether ``work`` must be fetched before run(): remote files, or a tabular split."""
    if isinstance(work, tabular.Split):
        return True
    first = work[0] if work else "/"  # (an absolute path is local: told without a parse)
    return (first[:1] != "/" or "::" in first) and storage.is_remote(first)


def fetch(
    work: Work,
    reader: SplitReader | None = None,
    position: int = 0,
    weigh: bool = True,
    folder: str | None = None,
    text_columns: Sequence[str] = (),
    timeout: float | None = None,
) -> Fetched:
    """What ``run()`` receives for ``work``: a list of local paths (remote files are downloaded
    into a new scratch folder, in ``folder``: the worker's own local directory, which Dask
    removes should the process die), or a split's DataFrame (from ``reader`` when given).
    ``weigh``: measure a DataFrame's memory, for a prefetch budget (not needed otherwise);
    ``text_columns``: read as text without ``reader`` (the job's, as the reader has them);
    ``timeout``: the seconds a download may take (the try's ``retry_settings.timeout``)."""
    if isinstance(work, tabular.Split):
        frame = reader.read(position) if reader is not None else read_one(work, text_columns)
        weight = int(frame.memory_usage(index=False, deep=False).sum()) if weigh else 0
        if work.kind == "csv":
            weight = max(weight, work.stop - work.start)
        return Fetched(frame, nbytes=weight)
    if not needs_fetch(work):
        return Fetched(list(work))
    scratch = tempfile.mkdtemp(prefix="daskscore-batch-", dir=folder)
    try:
        paths = storage.download(list(work), scratch, timeout=timeout)
        stamps = tuple(_stamp(p) for p in paths)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Fetched(paths, scratch, sum(s[1] for s in stamps), stamps)


def _stamp(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


class MiniBatchInput:
    """One mini-batch's input, try after try: the first try's comes from ``first`` (fetched
    ahead, or now), a retry's is the last one again when it can be, else fetched anew."""

    def __init__(
        self,
        work: Work,
        first: Callable[[], Fetched] | None = None,
        folder: str | None = None,
        text_columns: Sequence[str] = (),
        timeout: float | None = None,
    ) -> None:
        self._work = work
        self._first = first
        self._folder = folder
        self._text = text_columns  # (the job's: a split read again reads them as text too)
        self._timeout = timeout
        self._current: Fetched | None = None

    def argument(self) -> Any:
        """The argument of the next try; raises what fetching it raised."""
        if self._first is not None:
            first, self._first = self._first, None
            self._current = first()
            return self._current.argument
        reused = self._current.again() if self._current is not None else None
        if reused is None:
            self.release()
            reused = fetch(
                self._work, folder=self._folder, text_columns=self._text, timeout=self._timeout
            )
        self._current = reused
        return reused.argument

    def release(self) -> None:
        if self._current is not None:
            self._current.release()
            self._current = None


class Prefetcher:
    """Fetch items ``0 .. count-1`` in order on a daemon thread, at most ``depth`` ahead of the
    consumer and, beyond the first held, while under ``max_bytes``; :meth:`take` them in order."""

    def __init__(
        self,
        fetch_one: Callable[[int], Fetched],
        count: int,
        depth: int,
        max_bytes: int,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self._fetch_one = fetch_one
        self._count = count
        self._depth = max(1, depth)
        self._max_bytes = max_bytes
        self._on_exit = on_exit
        self._cond = threading.Condition()
        self._ready: dict[int, tuple[Fetched | None, BaseException | None]] = {}
        self._taken = 0  # items handed to the consumer (always a prefix)
        self._held = 0  # bytes of the items fetched and not yet taken
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="daskscore-prefetch", daemon=True)
        self._thread.start()

    def _may_fetch(self, index: int) -> bool:
        ahead = index - self._taken  # fetched and not taken, before this one
        return ahead < self._depth and (ahead == 0 or self._held < self._max_bytes)

    def _loop(self) -> None:
        try:
            for index in range(self._count):
                with self._cond:
                    while not self._closed and not self._may_fetch(index):
                        self._cond.wait()
                    if self._closed:
                        return
                item: Fetched | None = None
                error: BaseException | None = None
                try:
                    item = self._fetch_one(index)
                except BaseException as exc:  # noqa: BLE001 - the consumer raises it, at its turn
                    error = exc
                with self._cond:
                    if not self._closed:
                        self._ready[index] = (item, error)
                        self._held += item.nbytes if item is not None else 0
                        self._cond.notify_all()
                        continue
                if item is not None:  # closed while fetching: nobody will take it
                    item.release()
                return
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def take(self, index: int) -> Fetched:
        """Item ``index`` (the next in order), waiting for it; raises what its fetch raised."""
        with self._cond:
            if index != self._taken or self._closed:
                raise RuntimeError(f"prefetched items are taken in order, once ({index})")
            while index not in self._ready:
                self._cond.wait()
            item, error = self._ready.pop(index)
            self._taken = index + 1
            self._held -= item.nbytes if item is not None else 0
            self._cond.notify_all()
        if error is not None:
            raise error
        assert item is not None
        return item

    def close(self) -> None:
        """Stop; remove what was fetched and not taken (a fetch under way cleans up after)."""
        with self._cond:
            self._closed = True
            left = [item for item, _ in self._ready.values() if item is not None]
            self._ready.clear()
            self._held = 0
            self._cond.notify_all()
        for item in left:
            item.release()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


#: Small CSV splits (mean bytes below this) are cut from the task's runs in the task's own
#: thread: each is a slice of a run parsed once, cheaper than handing it over between
#: threads, and a second thread doing pandas work would take the GIL from ``run()``.
MIN_PREFETCH_SPLIT_BYTES = 1 << 20


def _worth_a_thread(works: list[Work]) -> bool:
    """Whether fetching ``works`` ahead on a thread of its own can overlap anything:
    downloads, Parquet row groups and big CSV splits (parsing releases the GIL), not the cutting
    of small CSV splits out of a parsed run."""
    fetched = [w for w in works if needs_fetch(w)]
    if not fetched:
        return False
    small = [w for w in fetched if isinstance(w, tabular.Split) and w.kind == "csv"]
    if len(small) < len(fetched):
        return True
    return sum(w.stop - w.start for w in small) / len(small) >= MIN_PREFETCH_SPLIT_BYTES


class TaskInputs:
    """The inputs of one task's mini-batches, fetched ahead on a :class:`Prefetcher` when
    that helps, else each when its turn comes."""

    def __init__(
        self,
        works: list[Work],
        depth: int,
        max_bytes: int,
        folder: str | None = None,
        text_columns: Sequence[str] = (),
        timeout: float | None = None,
    ) -> None:
        self._works = works
        self._folder = folder  # (where downloads go: the worker's local directory)
        self._timeout = timeout  # (a mini-batch's download: at most the try's timeout)
        splits = [w if isinstance(w, tabular.Split) else None for w in works]
        self._reader = SplitReader(splits, text_columns) if any(splits) else None
        self.prefetcher: Prefetcher | None = None
        if depth > 0 and len(works) > 1 and _worth_a_thread(works):
            reader = self._reader
            self.prefetcher = Prefetcher(
                self._fetch, len(works), depth, max_bytes, reader.close if reader else None
            )

    def _fetch(self, position: int) -> Fetched:
        weigh = self.prefetcher is not None
        work, reader, folder = self._works[position], self._reader, self._folder
        return fetch(work, reader, position, weigh, folder, timeout=self._timeout)

    def first(self, position: int) -> Callable[[], Fetched]:
        """How the first try of mini-batch ``position`` (in the task) gets its input."""
        if self.prefetcher is not None:
            return lambda: self.prefetcher.take(position)  # type: ignore[union-attr]
        return lambda: self._fetch(position)

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()  # the thread closes the reader when it ends
        elif self._reader is not None:
            self._reader.close()
