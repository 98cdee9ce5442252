"""Fixed-width records by id: a store in a file answers as the same store in memory, whatever
the ids written and read (consecutive, scattered, unsorted, repeated on reading)."""

from __future__ import annotations

import errno
import gc
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskscore.io.rowstore import RowStore

ROW = [("a", "<u2"), ("b", "<f8"), ("c", "<u4")]


def _rows(values: list[int]) -> np.ndarray:
    rows = np.zeros(len(values), ROW)
    rows["a"], rows["b"], rows["c"] = np.array(values) % 60000, np.array(values) / 7, values
    return rows


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 3000), st.data())
def test_a_file_store_answers_as_memory_does(n: int, data: st.DataObject) -> None:
    ids = st.lists(st.integers(0, n - 1), max_size=300)
    file, memory = RowStore(n, ROW, budget=0), RowStore(n, ROW, budget=1 << 30)
    assert file.on_disk and not memory.on_disk
    assert file.read([]).tolist() == [] and file.span(n, n).tolist() == []
    for _ in range(data.draw(st.integers(1, 6))):
        how = data.draw(st.sampled_from(["run", "scattered", "one"]))
        if how == "run":  # a task's consecutive mini-batches
            a = data.draw(st.integers(0, n - 1))
            written = list(range(a, min(n, a + data.draw(st.integers(1, 500)))))
        elif how == "scattered":
            written = list(dict.fromkeys(data.draw(ids)))  # distinct, any order
        else:
            written = [data.draw(st.integers(0, n - 1))]
        value = data.draw(st.integers(0, 1 << 31))
        rows = _rows([value + i for i in range(len(written))])
        if how == "one" and written:
            file.put(written[0], rows[0].tolist())
            memory.put(written[0], rows[0].tolist())
        else:
            file.write(written, rows)
            memory.write(written, rows)
        wanted = data.draw(ids)  # any order, repeats
        assert file.read(wanted).tolist() == memory.read(wanted).tolist()
        lo = data.draw(st.integers(0, n))
        hi = data.draw(st.integers(lo, n))
        assert file.span(lo, hi).tolist() == memory.span(lo, hi).tolist()
    for i in (0, n - 1):
        assert file.get(i) == memory.get(i)
    assert file.read(range(n)).tolist() == memory.read(range(n)).tolist()


def test_a_span_read_from_a_file_can_be_changed_and_written_back() -> None:
    store = RowStore(10, ROW, budget=0)
    span = store.span(2, 5)
    span["c"] = [7, 8, 9]  # (writable: a copy)
    store.write([2, 3, 4], span)
    assert store.read([4, 2, 3])["c"].tolist() == [9, 7, 8]
    with pytest.raises(IndexError):
        store.span(5, 11)


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_the_file_has_no_name_and_goes_with_the_store(tmp_path: Path) -> None:
    before = _fds()
    store = RowStore(1000, ROW, budget=0)
    store.write(range(1000), _rows(list(range(1000))))
    (fd,) = _fds() - before
    assert os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)")  # no name on disk
    assert os.fstat(int(fd)).st_size == 1000 * store.dtype.itemsize
    del store
    gc.collect()
    assert _fds() - before == set()
    closed = RowStore(10, ROW, budget=0)
    closed.close()
    closed.close()  # (twice: nothing more)
    assert _fds() - before == set()


def test_without_room_on_disk_the_records_stay_in_memory(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The file's room is taken when it is made: a full disk is met there, not halfway through
    a job, and the store keeps its records in memory instead, saying why."""
    before = _fds()

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with caplog.at_level(logging.WARNING, logger="daskscore"):
        store = RowStore(100_000, ROW, budget=0)
    assert not store.on_disk and _fds() == before  # (the file's descriptor given back)
    store.write(range(10), _rows(list(range(10))))
    assert store.read([9, 0])["c"].tolist() == [9, 0]
    (message,) = [r.getMessage() for r in caplog.records]
    assert "keeps 1 MB of its books in memory" in message and "No space left" in message
    assert "TMPDIR" in message
