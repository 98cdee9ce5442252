"""append_row rows formatted a flush at a time (:class:`daskscore.io.writers.AppendRowSink`):
the bytes of each mini-batch, and its byte range in the part file, are exactly those of
formatting its frame alone; a frame changed by ``run()`` after it returned it is written as it
was returned; what cannot be formatted together (dates, objects, a text with a line break,
other ``to_csv`` options) is formatted alone.  Also the packed payload of tabular tasks."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daskscore.io import tabular
from daskscore.io.ledger import LedgerWriter, make_staging, part_path, read_ledger
from daskscore.io.payloads import make_payload
from daskscore.io.rowtext import file_head
from daskscore.io.splittable import SplitTable
from daskscore.io.tabular import Split
from daskscore.io.writers import AppendRowWriter, Rows, format_rows
from daskscore.protocol import MiniBatchRecord, Payload, Status
from daskscore.worker.script import APPEND_ROW_CSV_DEFAULTS

KW = dict(APPEND_ROW_CSV_DEFAULTS)


def _frames() -> list[pd.DataFrame]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(30):
        n = int(rng.integers(1, 6))
        frame = pd.DataFrame(
            {
                "id": np.arange(n) + 10 * i,
                "x": rng.normal(size=n) * 10 ** float(rng.integers(-8, 9)),
                "ok": rng.random(n) > 0.5,
                "name": pd.array([f"n {i} {j}" for j in range(n)], dtype="string"),
            }
        )
        if i % 7 == 3:
            frame.loc[0, "x"] = np.nan  # (na_rep)
        if i % 11 == 5:
            frame["name"] = frame["name"].astype(object)  # objects: formatted alone
        if i % 13 == 6:
            frame.loc[0, "name"] = 'has "quotes" and a\nline break'  # several lines: alone
        if i % 9 == 8:
            frame["x"] = frame["x"].astype("float32")  # another kind: another run
        out.append(frame)
    out.insert(4, pd.DataFrame({"when": pd.to_datetime(["2024-01-01", "2024-01-02"])}))
    out.insert(9, pd.DataFrame({"id": [], "x": []}))  # empty: no bytes
    return out


def _commit(tmp_path: Path, outputs: list[object]) -> tuple[bytes, list[MiniBatchRecord]]:
    staging = tmp_path / "staging"
    make_staging(staging)
    ledger = LedgerWriter(staging, "a1")
    sink = AppendRowWriter().sink(ledger, str(staging), "a1")
    for mb, output in enumerate(outputs):
        rec = MiniBatchRecord(mb, 1, status=Status.RUN_DONE, final=True)
        sink.add([rec], output)
        if mb == 17:
            sink.flush()  # (two flushes: offsets go on from the first)
    sink.flush()
    ledger.close()
    return part_path(staging, "a1").read_bytes(), read_ledger(staging, "a1").committed


def test_each_mini_batch_gets_exactly_the_bytes_of_its_frame_alone(tmp_path: Path) -> None:
    frames = _frames()
    writer = AppendRowWriter()
    outputs = [writer.encode(f, KW) for f in frames]
    deferred = [isinstance(o, Rows) for o in outputs]
    assert sum(deferred) > 20 and not all(deferred)  # (both ways are exercised)
    assert not isinstance(outputs[4], Rows)  # dates: formatted now
    data, committed = _commit(tmp_path, outputs)
    alone = [format_rows(f, KW) for f in frames]
    assert data == b"".join(alone)
    for rec, want in zip(committed, alone, strict=True):
        assert data[rec.start_offset : rec.start_offset + rec.bytes] == want, rec.mini_batch


def test_a_frame_changed_after_run_returned_it_is_written_as_returned(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": [1, 2], "x": [0.5, 1.5]})
    before = format_rows(frame, KW)
    output = AppendRowWriter().encode(frame, KW)
    assert isinstance(output, Rows)
    frame.loc[0, "x"] = 99.0  # (a script that reuses its result frame)
    frame["id"] = [7, 8]
    data, _ = _commit(tmp_path, [output])
    assert data == before


def test_a_frame_over_an_array_the_script_reuses_is_written_as_returned(tmp_path: Path) -> None:
    buffer = np.array([[1.0, 0.5], [2.0, 1.5]])  # a preallocated output buffer
    frame = pd.DataFrame(buffer, columns=["id", "x"], copy=False)
    before = format_rows(frame, KW)
    output = AppendRowWriter().encode(frame, KW)
    assert isinstance(output, Rows)
    buffer[:] = -1.0  # the next call fills it again: pandas does not see this change
    data, _ = _commit(tmp_path, [output])
    assert data == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {**KW, "header": True},
        {**KW, "index": True},
        {**KW, "date_format": "%Y"},
        {**KW, "float_format": lambda v: f"{v:.1f}"},
    ],
)
def test_other_options_are_formatted_alone(kwargs: dict) -> None:
    frame = pd.DataFrame({"id": [1, 2], "x": [0.5, 1.5]})
    out = AppendRowWriter().encode(frame, kwargs)
    assert out == format_rows(frame, kwargs)


def test_options_that_format_row_by_row_are_batched_with_the_same_bytes(tmp_path: Path) -> None:
    kwargs = {**KW, "sep": ",", "float_format": "%.3f", "na_rep": "NA"}
    frames = [pd.DataFrame({"a": [i, i + 1], "b": [i / 3, np.nan]}) for i in range(5)]
    outputs = [AppendRowWriter().encode(f, kwargs) for f in frames]
    assert all(isinstance(o, Rows) for o in outputs)
    data, _ = _commit(tmp_path, outputs)
    assert data == b"".join(format_rows(f, kwargs) for f in frames)


DTYPES = ("string", object)


@pytest.mark.parametrize(
    "kwargs",
    [KW, {**KW, "sep": ";", "quotechar": "'"}, {**KW, "quoting": 3, "escapechar": "\\"}],
    ids=["default", "quotechar", "escaped"],
)
def test_a_value_with_a_carriage_return_is_quoted_and_reads_back(
    tmp_path: Path, kwargs: dict
) -> None:
    """Unquoted, a lone "\r" ends a row for pandas' reader.  Deferred frames of text (string
    dtype) and frames formatted at once (objects) alike; the frames without one keep the bytes
    to_csv gives them."""
    texts = ["cat\r", "dog", "a\rb 'c' \"d\"", "x\r\ny", "\\r\\"]
    frames = [
        pd.DataFrame({"n": [i, i + 1], "t": pd.Series([texts[i % 5], "z"], dtype=dtype)})
        for i in range(10)
        for dtype in DTYPES
    ]
    outputs = [AppendRowWriter().encode(f, kwargs) for f in frames]
    deferred = [isinstance(o, Rows) for o in outputs]
    assert deferred == [dtype == "string" and "quoting" not in kwargs for dtype in DTYPES] * 10
    data, _ = _commit(tmp_path, outputs)
    read = {"sep": kwargs["sep"], "header": None, "quotechar": kwargs.get("quotechar", '"')}
    if kwargs.get("escapechar"):
        read.update(quoting=3, escapechar="\\", engine="python")
    back = pd.read_csv(io.BytesIO(data), **read, keep_default_na=False)
    assert back.values.tolist() == pd.concat(frames).values.tolist()
    plain = pd.DataFrame({"n": [1], "t": ["dog"]})
    assert format_rows(plain, kwargs) == plain.to_csv(**kwargs, lineterminator="\n").encode()


def test_quoting_none_without_an_escapechar_writes_a_carriage_return_raw() -> None:
    """``quoting=3`` and no escapechar: nothing can be quoted or escaped, and to_csv writes
    the value as it is (as Azure's writer does); quoting it failed the mini-batch ("need to
    escape")."""
    kwargs = {**KW, "quoting": 3}
    frame = pd.DataFrame({"t": ["x\ry", "z"], "n": [1, 2]})
    assert format_rows(frame, kwargs) == b"x\ry 1\nz 2\n"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-16-le", "latin-1"])
def test_encoded_frames_batched_or_alone_have_no_byte_order_mark_of_their_own(
    tmp_path: Path, encoding: str
) -> None:
    """Each mini-batch's bytes are its text in the encoding without the mark: the assembled
    file starts with it once (its head)."""
    kwargs = {**KW, "encoding": encoding}
    frames = [pd.DataFrame({"a": [i, i + 1], "t": ["é", "ü"]}) for i in range(4)]
    outputs = [AppendRowWriter().encode(f, kwargs) for f in frames]
    assert isinstance(outputs[0], Rows) == (encoding != "latin-1")
    data, _ = _commit(tmp_path, outputs)
    head = file_head(kwargs)
    assert (head + data).decode(encoding) == "".join(
        f.to_csv(**KW, lineterminator="\n") for f in frames
    )
    assert head == {"utf-16": b"\xff\xfe", "utf-32": b"\xff\xfe\x00\x00"}.get(encoding, b"")


def _rows_file(root: Path, n: int) -> Path:
    path = root / f"rows{n}.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i % 97 / 3:.3f}\n" for i in range(n)))
    return path


def test_a_tabular_task_travels_as_columns_and_arrives_as_its_splits(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i / 2}\n" for i in range(200)))
    table = SplitTable(tabular.plan_splits([str(path)], ("rows", 7)))
    ids = list(range(3, 20))

    def tries(mb: int) -> int:
        return mb % 3

    want = [(mb, tries(mb), table[mb]) for mb in ids]
    packed = make_payload(ids, tries, table)
    assert pickle.loads(pickle.dumps(packed)).items == want
    assert len(pickle.dumps(packed)) < len(pickle.dumps(Payload(want)))
    # a task of thousands of splits: about a byte each, packed (the driver keeps 1,000 sent)
    many = SplitTable(tabular.plan_splits([str(_rows_file(tmp_path, 20_000))], ("rows", 2)))
    big = make_payload(list(range(len(many))), lambda mb: 0, many)
    assert len(pickle.dumps(big)) < 1.5 * len(many), len(pickle.dumps(big)) / len(many)
    assert pickle.loads(pickle.dumps(big)).items == [(mb, 0, many[mb]) for mb in range(len(many))]
    # splits of several files, cut by bytes, over 4 GiB: each as planned
    odd = SplitTable([
        Split("/a.csv", "csv", 4, 10, 0, 3), Split("/a.csv", "csv", 10, 300, 3, 5),
        Split("/a.csv", "csv", 300, 301, 8, None), Split("/b.parquet", "parquet", 0, 2, 0, 9),
        Split("/c.csv", "csv", 5 << 32, 6 << 32, 1 << 33, 7),
    ])  # fmt: skip
    for a, b in ((0, 5), (1, 4), (2, 3), (3, 5)):
        ids = list(range(a, b))
        assert pickle.loads(pickle.dumps(make_payload(ids, tries, odd))).items == [
            (mb, tries(mb), odd[mb]) for mb in ids
        ]
    # not consecutive (requeued mini-batches): the list itself, as before
    gappy = [3, 5, 6]
    assert pickle.loads(pickle.dumps(make_payload(gappy, tries, table))).items == [
        (mb, tries(mb), table[mb]) for mb in gappy
    ]


def test_a_script_returning_lists_never_imports_pandas_in_its_workers(tmp_path: Path) -> None:
    """Worker memory: pandas costs a worker ~65 MB and half a second to import; a job whose
    run() returns lists of strings must not import it (a new code path once did).  (Older
    Dask releases import pandas in their workers themselves: nothing to check there.)"""
    from conftest import run_cli, write_deployment, write_inputs
    from helpers import show

    script = """
        import os
        import sys

        AT_INIT = []

        def init():
            AT_INIT.append("pandas" in sys.modules)

        def run(mini_batch):
            loaded = "pandas" in sys.modules
            return [f"{os.path.basename(p)} {AT_INIT[0]} {loaded}" for p in mini_batch]
    """
    dep = write_deployment(tmp_path / "deploy", script, settings={"mini_batch_size": 1})
    inputs = write_inputs(tmp_path / "in", 6)
    out = tmp_path / "out"
    proc = run_cli("run", str(dep), "-i", str(inputs), "-o", str(out), "--workers", "1")
    assert proc.returncode == 0, show(proc)
    rows = [r.split() for r in (out / "predictions.csv").read_text().split("\n") if r]
    if all(at_init == "True" for _, at_init, _ in rows):
        pytest.skip("this Dask release imports pandas in its workers itself")
    assert [now for _, _, now in rows] == ["False"] * 6, rows


def test_frames_with_other_column_names_are_not_aligned(tmp_path: Path) -> None:
    """Same dtypes, other names (or order): each keeps its own columns' values in its order."""
    frames = [
        pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5]}),
        pd.DataFrame({"c": [3], "d": [2.5]}),
        pd.DataFrame({"b": [4], "a": [9.5]}),
        pd.DataFrame({"a": [5], "b": [3.5]}),
    ]
    outputs = [AppendRowWriter().encode(f, KW) for f in frames]
    assert all(isinstance(o, Rows) for o in outputs)
    data, _ = _commit(tmp_path, outputs)
    assert (
        data
        == b"".join(format_rows(f, KW) for f in frames)
        == b"1 0.5\n2 1.5\n3 2.5\n4 9.5\n5 3.5\n"
    )
