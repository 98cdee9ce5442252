"""Unit tests of daskscore.io.tabular: tabular mini-batch sizes, planning splits, reading them back,
carrying input columns onto results."""

from __future__ import annotations

import itertools
import os
import pickle
import random
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskscore.config.sizes import parse_mini_batch_size
from daskscore.errors import ConfigError, InputError
from daskscore.io import csvscan
from daskscore.io.splittable import SplitTable
from daskscore.io.tabular import (
    TABULAR_SUFFIXES,
    Split,
    carry_columns,
    plan_cuts,
    plan_splits,
    read_split,
)

# --------------------------------------------------------------------------- parse_mini_batch_size


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1024, ("bytes", 1024)),
        (1, ("bytes", 1)),
        ("512", ("bytes", 512)),
        (" 512 ", ("bytes", 512)),
        ("1024B", ("bytes", 1024)),
        ("1024 b", ("bytes", 1024)),
        ("10KB", ("bytes", 10 * 1024)),
        ("100 kb", ("bytes", 100 * 1024)),
        ("10k", ("bytes", 10 * 1024)),
        ("10KiB", ("bytes", 10 * 1024)),
        ("1.5MB", ("bytes", 1536 * 1024)),
        ("10 Mb", ("bytes", 10 * 1024**2)),
        ("1GB", ("bytes", 1024**3)),
        ("2g", ("bytes", 2 * 1024**3)),
        ("0.5KB", ("bytes", 512)),
        ("rows:500", ("rows", 500)),
        ("ROWS: 7", ("rows", 7)),
        ("500rows", ("rows", 500)),
        ("500 rows", ("rows", 500)),
        ("1 row", ("rows", 1)),
    ],
)
def test_parse_mini_batch_size(value: int | str, expected: tuple[str, int]) -> None:
    assert parse_mini_batch_size(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        True,
        1.5,
        None,
        "",
        "0",
        "-5",
        "abc",
        "10TB",
        "1.5",
        "1.5B",
        "0KB",
        "0.0001KB",
        "rows:0",
        "rows:1.5",
        "rows",
        "10 KB rows",
        "1e6",
        "١٢",
    ],  # fmt: skip
)
def test_parse_mini_batch_size_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mini_batch_size(value, where="deployment.yml: settings.mini_batch_size")  # type: ignore[arg-type]
    message = str(info.value)
    assert "deployment.yml: settings.mini_batch_size" in message
    assert repr(value) in message
    assert "100KB" in message and "rows:500" in message


# --------------------------------------------------------------------------- CSV helpers


def _cell(rng: random.Random, kind: str, awkward: bool) -> str:
    if kind == "int":
        return str(rng.randint(-(10 ** rng.randint(0, 9)), 10 ** rng.randint(0, 9)))
    text = rng.choice("abxyz") + "".join(rng.choice("abxyz ") for _ in range(rng.randint(0, 25)))
    if awkward and rng.random() < 0.1:
        text = rng.choice(['say "hi"', "a,b", 'x,"y"'])
    if '"' in text or "," in text:
        text = '"' + text.replace('"', '""') + '"'
    return text


def write_csv(path: Path, rng: random.Random, n_rows: int, opts: dict) -> None:
    """A CSV file of ``n_rows`` rows of random widths; ``opts`` picks the awkward parts."""
    kinds = [rng.choice(["int", "str"]) for _ in range(opts["n_cols"])]
    eol = opts["eol"]
    header = ",".join(f"c{i}" for i in range(len(kinds)))
    rows = [",".join(_cell(rng, k, opts["quotes"]) for k in kinds) for _ in range(n_rows)]
    if opts["quoted_newline"] and n_rows:
        header += ",extra"
        rows[n_rows // 2] += ',"two\nlines"'
    if opts["stray_quote"] and n_rows:  # a '"' inside an unquoted field is a plain character
        header = "lead," + header
        stray = n_rows // 2 if rng.random() < 0.5 else rng.randrange(n_rows)
        rows = [('x"y,' if i == stray else "p,") + row for i, row in enumerate(rows)]
    lines = [""] if opts["leading_blank"] else []
    lines.append(header)
    for row in rows:
        if opts["blank_lines"] and rng.random() < 0.05:
            lines.append(rng.choice(["", "  ", "\t"]))
        lines.append(row)
    if opts["blank_lines"] and rng.random() < 0.5:
        lines.extend(["", " "][: rng.randint(1, 2)])  # trailing blank lines
    text = eol.join(lines) + (eol if opts["trailing_eol"] else "")
    path.write_bytes(("\ufeff" if opts["bom"] else "").encode() + text.encode())


csv_opts = st.fixed_dictionaries(
    {
        "n_cols": st.integers(1, 4),
        "eol": st.sampled_from(["\n", "\r\n", "\r"]),
        "bom": st.booleans(),
        "stray_quote": st.booleans(),
        "trailing_eol": st.booleans(),
        "leading_blank": st.booleans(),
        "blank_lines": st.booleans(),
        "quotes": st.booleans(),
        "quoted_newline": st.sampled_from([False, False, False, True]),
    }
)
sizes = st.one_of(
    st.tuples(st.just("bytes"), st.integers(1, 6000)),
    st.tuples(st.just("rows"), st.integers(1, 350)),
)


def check_splits_of_file(path: str, splits: list[Split], size: tuple[str, int]) -> pd.DataFrame:
    """Invariants of one file's splits; returns the file read back split by split."""
    kind, n = size
    data = Path(path).read_bytes()
    frames, next_row = [], 0
    for i, s in enumerate(splits):
        assert s.path == path
        assert s.first_row == next_row
        df = read_split(s)
        assert isinstance(df.index, pd.RangeIndex) and df.index.start == s.first_row
        assert len(df) >= 1
        if s.n_rows is not None:
            assert len(df) == s.n_rows
        last = i == len(splits) - 1
        if s.kind == "csv":
            assert s.start < s.stop and (last or data[s.stop - 1 : s.stop] == b"\n")
            if i:
                assert s.start == splits[i - 1].stop
            assert (s.stop == len(data)) == last
            if not last and kind == "bytes":
                assert s.stop - s.start >= n
                assert _previous_row_end(data[s.start : s.stop]) < n  # less than one line more
            if not last and kind == "rows":
                assert s.n_rows == n
        next_row += len(df)
        frames.append(df)
    return pd.concat(frames) if frames else pd.DataFrame()


def _previous_row_end(body: bytes) -> int:
    """Offset in ``body`` just past the row before its last line (0 if none)."""
    last_line_start = body.rfind(b"\n", 0, len(body) - 1) + 1
    content_end = len(body[:last_line_start].rstrip(b" \t\r\n"))
    return body.index(b"\n", content_end) + 1 if content_end else 0


def assert_same_rows(parts: pd.DataFrame, whole: pd.DataFrame) -> None:
    if len(whole) == 0:
        assert len(parts) == 0
    else:
        pd.testing.assert_frame_equal(parts, whole)


# --------------------------------------------------------------------------- CSV properties


@settings(max_examples=150, deadline=None)
@given(
    files=st.lists(st.tuples(st.integers(0, 300), csv_opts), min_size=1, max_size=3),
    size=sizes,
    seed=st.integers(0, 2**32 - 1),
)
def test_csv_splits_read_back_as_the_whole_file(
    files: list[tuple[int, dict]], size: tuple[str, int], seed: int
) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (n_rows, opts) in enumerate(files):
            paths.append(os.path.join(tmp, f"part-{i}.csv"))
            write_csv(Path(paths[-1]), rng, n_rows, opts)
        splits = plan_splits(paths, size)
        assert list(SplitTable.from_cuts(plan_cuts(paths, size))) == splits  # (the job's table)
        order = [paths.index(s.path) for s in splits]
        assert order == sorted(order)  # file order kept, no split crosses a file
        for path, (n_rows, opts) in zip(paths, files, strict=True):
            mine = [s for s in splits if s.path == path]
            parts = check_splits_of_file(path, mine, size)
            assert_same_rows(parts, pd.read_csv(path))
            # (a lone '\r' ends a line as for pandas; a stray '"' leaves a line's quotes odd)
            if not (opts["quoted_newline"] or opts["stray_quote"] or opts["eol"] == "\r"):
                assert all(s.n_rows is not None for s in mine)  # was cut by bytes, not fallen back
                assert sum(s.n_rows or 0 for s in mine) == n_rows


# --------------------------------------------------------------------------- Parquet properties


@settings(max_examples=60, deadline=None)
@given(
    n_rows=st.lists(st.integers(0, 300), min_size=1, max_size=3),
    group=st.integers(3, 100),
    size=st.one_of(
        st.tuples(st.just("bytes"), st.integers(1, 8000)),
        st.tuples(st.just("rows"), st.integers(1, 350)),
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_parquet_splits_read_back_as_the_whole_file(
    n_rows: list[int], group: int, size: tuple[str, int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, n in enumerate(n_rows):
            df = pd.DataFrame(
                {
                    "id": np.arange(n) * 7,
                    "x": rng.normal(size=n),
                    "s": ["w" * int(k) for k in rng.integers(1, 40, size=n)],
                }
            )
            paths.append(os.path.join(tmp, f"part-{i}.parquet"))
            table = pa.Table.from_pandas(df, preserve_index=False)
            pq.write_table(table, paths[-1], row_group_size=group)
        splits = plan_splits(paths, size)
        assert list(SplitTable.from_cuts(plan_cuts(paths, size))) == splits
        order = [paths.index(s.path) for s in splits]
        assert order == sorted(order)
        for path in paths:
            mine = [s for s in splits if s.path == path]
            meta = pq.read_metadata(path)
            assert_same_rows(check_splits_of_file(path, mine, size), pd.read_parquet(path))
            if mine:
                assert mine[0].start == 0 and mine[-1].stop == meta.num_row_groups
            for a, b in zip(mine, mine[1:], strict=False):
                assert a.stop == b.start
            check_grouping(meta, mine, size)


def _weight(meta: pq.FileMetaData, i: int, kind: str) -> int:
    group = meta.row_group(i)
    if kind == "rows":
        return group.num_rows
    return sum(group.column(c).total_compressed_size for c in range(group.num_columns))


def check_grouping(meta: pq.FileMetaData, splits: list[Split], size: tuple[str, int]) -> None:
    """Each split is at most n (or one row group), and the next row group would not fit."""
    kind, n = size
    for i, s in enumerate(splits):
        weight = sum(_weight(meta, g, kind) for g in range(s.start, s.stop))
        assert s.stop - s.start == 1 or weight <= n
        if i + 1 < len(splits):
            assert weight + _weight(meta, s.stop, kind) > n


# --------------------------------------------------------------------------- CSV examples


@pytest.mark.parametrize("content", [b"", b"a,b\n", b"a,b", b"a,b\r\n", b"\n\n", b"a,b\n\n  \n"])
def test_a_csv_without_data_rows_gives_no_split(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    assert plan_splits([str(path)], ("bytes", 10)) == []
    assert plan_splits([str(path)], ("rows", 1)) == []


def test_csv_rows_split_example(tmp_path: Path) -> None:
    path = tmp_path / "DATA.CSV"  # suffixes are case-insensitive
    path.write_bytes(b"x,y\n1,aa\n2,b\n\n3,cccc\n4,d")
    splits = plan_splits([str(path)], ("rows", 2))
    assert [(s.kind, s.start, s.stop, s.first_row, s.n_rows) for s in splits] == [
        ("csv", 4, 13, 0, 2),
        ("csv", 13, 24, 2, 2),
    ]
    second = read_split(splits[1])
    assert second.to_dict("index") == {2: {"x": 3, "y": "cccc"}, 3: {"x": 4, "y": "d"}}


def test_csv_with_a_quoted_line_break_is_one_split(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes(b'a,b\n1,x\n2,"two\nlines"\n3,y\n')
    (split,) = plan_splits([str(path)], ("rows", 1))
    assert (split.first_row, split.n_rows) == (0, None)
    assert read_split(split)["b"].tolist() == ["x", "two\nlines", "y"]


def test_csv_with_a_lone_carriage_return_is_one_split(tmp_path: Path) -> None:
    path = tmp_path / "cr.csv"
    path.write_bytes(b"a,b\n1,2\r3,4\n5,6\n")
    (split,) = plan_splits([str(path)], ("rows", 1))
    assert read_split(split)["a"].tolist() == [1, 3, 5]


@pytest.mark.parametrize(
    "content",
    [
        b"a,b\r1,2\r3,4\r",  # classic Mac line ends: no '\n' at all
        b"\xef\xbb\xbf\n\na,b\n1,2\n3,4\n",  # a byte-order mark, blank lines, then the header
        b'a,b,c,d\n1,x"y,"z\n1",w"v\n3,4,5,6\n',  # a '"' in an unquoted field, then a quoted break
    ],
    ids=["cr-only", "bom-blank-lines", "stray-quote"],
)
def test_every_row_reaches_its_split_as_pandas_reads_the_file(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    splits = plan_splits([str(path)], ("rows", 1))
    parts = pd.concat([read_split(s) for s in splits])
    pd.testing.assert_frame_equal(parts, pd.read_csv(path))
    assert len(parts) == 2


@pytest.mark.parametrize(
    "rows",
    [b"k0,1,2\nk1,3,4\n", b"10,a,p\n20,b,q\n30,c,r\n", b"4,a,p\n5,b,q\n"],
    ids=["text", "evenly-spaced", "consecutive"],  # (pandas 3 makes those a RangeIndex)
)
def test_rows_with_more_fields_than_the_header_are_refused_not_cut_short(
    tmp_path: Path, rows: bytes
) -> None:
    """pandas takes the first field of such rows for the index: the rows would lose it."""
    path = tmp_path / "short-header.csv"
    path.write_bytes(b"a,b\n" + rows)
    (split,) = plan_splits([str(path)], ("bytes", 1024))
    with pytest.raises(InputError, match="more fields than its header has names"):
        read_split(split)


def test_a_file_changed_or_removed_after_planning_says_so(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"a\n" + b"".join(b"%d\n" % i for i in range(20)))
    splits = plan_splits([str(path)], ("rows", 5))
    path.write_bytes(b"a\n1\n2\n")
    with pytest.raises(InputError, match="changed since the job listed its inputs"):
        read_split(splits[1])
    path.unlink()
    with pytest.raises(InputError, match="is gone: it was there when the job listed"):
        read_split(splits[0])


def test_read_split_passes_kwargs_and_refuses_row_changing_ones(tmp_path: Path) -> None:
    path = tmp_path / "k.csv"
    path.write_bytes(b"a;b\n1;2\n3;4\n")
    (split,) = plan_splits([str(path)], ("bytes", 1024))
    df = read_split(split, sep=";", usecols=["b"], dtype={"b": "float64"})
    assert df["b"].tolist() == [2.0, 4.0] and list(df.columns) == ["b"]
    with pytest.raises(ValueError, match="skiprows"):
        read_split(split, skiprows=1)


def test_read_split_notices_a_row_count_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"a\n1\n2\n")
    with pytest.raises(InputError, match="planner counted 5"):
        read_split(Split(str(path), "csv", 2, 6, 0, 5))


# --------------------------------------------------------------------------- planning errors


def test_an_unknown_suffix_is_refused_before_any_work(tmp_path: Path) -> None:
    good = tmp_path / "a.csv"
    good.write_text("a\n1\n")
    with pytest.raises(InputError) as info:
        plan_splits([str(good), str(tmp_path / "b.json")], ("rows", 1))
    assert "b.json" in str(info.value)
    assert all(suffix in str(info.value) for suffix in TABULAR_SUFFIXES)


def test_a_broken_parquet_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pq"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="bad.pq"):
        plan_splits([str(path)], ("bytes", 100))


@pytest.mark.parametrize(
    ("encoding", "said"),
    [
        ("utf-16", "is UTF-16 (its byte-order mark says so)"),
        ("utf-32", "is UTF-32 (its byte-order mark says so)"),
        ("utf-16-le", "is UTF-16 or UTF-32 (its header line holds NUL bytes"),
        ("utf-16-be", "is UTF-16 or UTF-32 (its header line holds NUL bytes"),
    ],
)
def test_a_utf16_or_utf32_csv_is_refused_naming_the_file(
    tmp_path: Path, encoding: str, said: str
) -> None:
    """Its lines were counted byte by byte: the NUL after the last ``\\n`` made a phantom row
    (300 rows counted 301), and every mini-batch failed with pandas' UTF-8 error."""
    path = tmp_path / "u.csv"
    path.write_bytes(("id,name\n" + "".join(f"{i},n{i}\n" for i in range(300))).encode(encoding))
    with pytest.raises(InputError) as info:
        plan_splits([str(path)], ("bytes", 1024))
    message = str(info.value)
    assert message.startswith(f"input file '{path}' {said}")
    assert "not UTF-8" in message and "iconv -f UTF-" in message


def _compressed(kind: str, path: Path, data: bytes) -> None:
    """``data`` written to ``path`` compressed as ``kind`` by its own library."""
    import bz2
    import gzip
    import lzma
    import zipfile

    if kind == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("data.csv", data)
    elif kind == "zstd":
        with pa.CompressedOutputStream(str(path), "zstd") as stream:
            stream.write(data)
    else:
        path.write_bytes({"gzip": gzip, "bzip2": bz2, "xz": lzma}[kind].compress(data))


@pytest.mark.parametrize(
    ("kind", "command"),
    [
        ("gzip", "gzip -dc data.csv"),
        ("bzip2", "bzip2 -dc data.csv"),
        ("zstd", "zstd -dc data.csv"),
        ("xz", "xz -dc data.csv"),
        ("zip", "unzip -d plain data.csv"),
    ],
)
def test_a_compressed_csv_is_refused_as_compressed(tmp_path: Path, kind: str, command: str) -> None:
    """A gzip-compressed ``data.csv`` was said to be "UTF-16 or UTF-32" (its NUL bytes), with
    an iconv command that could not help."""
    path = tmp_path / "data.csv"
    _compressed(kind, path, b"id,name\n" + b"".join(b"%d,n%d\n" % (i, i) for i in range(300)))
    with pytest.raises(InputError) as info:
        plan_splits([str(path)], ("rows", 50))
    message = str(info.value)
    assert message.startswith(f"input file '{path}' is {kind}-compressed"), message
    assert command in message and "UTF-16" not in message and "iconv" not in message


def test_a_csv_whose_text_begins_as_a_bzip2_file_does_is_planned(tmp_path: Path) -> None:
    """Only a bzip2 stream's whole signature counts, not a header that begins ``BZh``."""
    path = tmp_path / "bzh.csv"
    path.write_text("BZh9,x\n1,2\n")
    assert len(plan_splits([str(path)], ("rows", 1))) == 1


def test_utf8_with_a_byte_order_mark_or_nul_bytes_in_a_row_is_planned(tmp_path: Path) -> None:
    bom, nul = tmp_path / "bom.csv", tmp_path / "nul.csv"
    bom.write_bytes(b"\xef\xbb\xbfid,name\n" + b"".join(b"%d,n\n" % i for i in range(30)))
    nul.write_bytes(b"id,name\n" + b"".join(b"%d,\x00\x00\x00\n" % i for i in range(30)))
    splits = plan_splits([str(bom), str(nul)], ("bytes", 1 << 20))
    assert [s.n_rows for s in splits] == [30, 30]


def test_a_bad_size_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        plan_splits([], ("files", 3))


# --------------------------------------------------------------------------- Parquet examples


def test_parquet_stored_index_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "i.parquet"
    df = pd.DataFrame({"v": [1, 2, 3, 4]}, index=pd.Index([10, 20, 30, 40], name="key"))
    pq.write_table(pa.Table.from_pandas(df), path, row_group_size=2)
    splits = plan_splits([str(path)], ("rows", 2))
    assert [(s.start, s.stop, s.first_row, s.n_rows) for s in splits] == [
        (0, 1, 0, 2),
        (1, 2, 2, 2),
    ]
    second = read_split(splits[1])
    assert second.to_dict("list") == {"key": [30, 40], "v": [3, 4]}
    assert list(second.index) == [2, 3]
    assert list(read_split(splits[0], columns=["v"]).columns) == ["v"]


@pytest.mark.parametrize(
    "index",
    [
        pd.RangeIndex(101, 107, name="id"),  # consecutive ids: a range in the metadata alone
        pd.Index([101, 205, 307, 409, 500, 611], name="id"),  # ids with gaps: a stored column
        pd.RangeIndex(100, 112, 2),  # unnamed, but not the row numbers 0, 1, 2...
        pd.Index(list("uvwxyz")),  # unnamed, stored as __index_level_0__
        pd.MultiIndex.from_arrays([list("aabbcc"), [5, 6, 7, 8, 9, 10]], names=["g", None]),
    ],
    ids=["named-range", "named-gaps", "unnamed-range", "unnamed-text", "multiindex"],
)
def test_a_stored_index_comes_back_as_columns_in_every_split(
    tmp_path: Path, index: pd.Index
) -> None:
    """Whatever its values, an index the file records reaches run() as column(s), as
    ``pd.read_parquet(...).reset_index()`` gives them; run()'s index stays the row numbers."""
    path = tmp_path / "i.parquet"
    pd.DataFrame({"v": np.arange(6) * 1.5}, index=index).to_parquet(path, row_group_size=2)
    splits = plan_splits([str(path)], ("rows", 2))
    assert len(splits) == 3  # (pyarrow rebuilds a RangeIndex only when the whole file is read)
    got = [read_split(s) for s in splits]

    want = pd.read_parquet(path).reset_index()
    pd.testing.assert_frame_equal(pd.concat(got, ignore_index=True), want)
    assert [list(g.index) for g in got] == [[0, 1], [2, 3], [4, 5]]
    (whole,) = plan_splits([str(path)], ("rows", 6))
    pd.testing.assert_frame_equal(read_split(whole), want)
    assert list(read_split(splits[1], columns=["v"]).columns) == ["v"]


def test_the_default_range_index_is_not_a_column(tmp_path: Path) -> None:
    path = tmp_path / "plain.parquet"
    pd.DataFrame({"v": [1, 2, 3, 4]}).to_parquet(path, row_group_size=2)
    assert [list(read_split(s).columns) for s in plan_splits([str(path)], ("rows", 2))] == [
        ["v"],
        ["v"],
    ]


def test_a_stored_index_named_as_a_column_is_an_input_error_naming_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "twice.parquet"
    pd.DataFrame({"id": [1, 2]}, index=pd.RangeIndex(7, 9, name="id")).to_parquet(path)
    (split,) = plan_splits([str(path)], ("rows", 5))
    with pytest.raises(InputError, match=r"twice\.parquet': its stored index \(id\)"):
        read_split(split)


def test_a_zero_row_parquet_file_gives_no_split(tmp_path: Path) -> None:
    path = tmp_path / "z.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), path)
    assert plan_splits([str(path)], ("rows", 5)) == []
    path.write_bytes(b"")  # (an empty file, as an empty CSV file: no rows, not an error)
    assert plan_splits([str(path)], ("rows", 5)) == []


def test_split_pickles() -> None:
    split = Split("/x.csv", "csv", 4, 100, 0, 10)
    assert pickle.loads(pickle.dumps(split)) == split


# --------------------------------------------------------------------------- carry_columns


def test_carry_columns() -> None:
    split_df = pd.DataFrame(
        {"id": [7, 8, 9], "score": [0.1, 0.2, 0.3], "name": pd.array(["a", "b", None], "string")},
        index=pd.RangeIndex(100, 103),
    )
    result = pd.DataFrame({"score": [1, 0, 1]})
    out = carry_columns(split_df, result, ["id", "score", "name"])
    assert list(out.columns) == ["id", "input_score", "name", "score"]
    assert out["id"].tolist() == [7, 8, 9] and out["input_score"].tolist() == [0.1, 0.2, 0.3]
    assert out["name"].dtype == "string" and out["name"].isna().tolist() == [False, False, True]
    assert list(out.index) == [0, 1, 2]  # the result keeps its own index
    assert list(result.columns) == ["score"]  # not modified
    assert carry_columns(split_df, result, []).equals(result)


@pytest.mark.parametrize(
    ("index", "want"),
    [
        ([102, 100, 101], [9, 7, 8]),  # the input's labels in another order: by label
        ([100, 101, 102], [7, 8, 9]),  # the input's index: by position, as by label
        ([0, 1, 2], [7, 8, 9]),  # a fresh 0..n-1 (reset_index): by position
        ([101, 101, 100], [7, 8, 9]),  # a label twice: by position
        ([102, 100, 5], [7, 8, 9]),  # a label the input has not: by position
        (["c", "a", "b"], [7, 8, 9]),  # labels of its own: by position
    ],
)
def test_carry_columns_match_rows_by_label_where_run_kept_the_input_index(
    index: list[object], want: list[int]
) -> None:
    split_df = pd.DataFrame({"id": [7, 8, 9]}, index=pd.RangeIndex(100, 103))
    result = pd.DataFrame({"p": [1.0, 2.0, 3.0]}, index=index)
    out = carry_columns(split_df, result, ["id"])
    assert out["id"].tolist() == want
    assert out.index.tolist() == index and out["p"].tolist() == [1.0, 2.0, 3.0]
    # the index run() gave, where the result no longer has it (a dataset made it a column)
    moved = carry_columns(split_df, result.reset_index(drop=True), ["id"], index=result.index)
    assert moved["id"].tolist() == want


def test_a_carried_column_named_as_the_result_s_index_is_renamed() -> None:
    """The result keeps its index (a score() frame's): a carried name the index has is
    ``input_<name>``, as where a dataset has made that index a column."""
    split_df = pd.DataFrame({"row": [0, 1], "id": [7, 8]})
    result = pd.DataFrame({"p": [1.0, 2.0]}, index=pd.Index([7, 8], name="row"))
    out = carry_columns(split_df, result, ["id", "row"])
    assert list(out.columns) == ["id", "input_row", "p"] and out.index.name == "row"
    assert carry_columns(split_df, result.reset_index(), ["row"]).columns[0] == "input_row"


def test_carry_columns_errors() -> None:
    split_df = pd.DataFrame({"a": [1, 2], "input_b": [3, 4], "b": [5, 6]})
    with pytest.raises(ValueError, match="returned 1 rows for a mini-batch of 2 rows"):
        carry_columns(split_df, pd.DataFrame({"y": [1]}), ["a"])
    with pytest.raises(ValueError, match="'nope'"):
        carry_columns(split_df, pd.DataFrame({"y": [1, 2]}), ["nope"])
    with pytest.raises(ValueError, match="'input_b' is already taken"):
        carry_columns(split_df, pd.DataFrame({"b": [1, 2]}), ["input_b", "b"])


@pytest.mark.parametrize("size", [("rows", 1), ("rows", 7), ("rows", 1000), ("bytes", 50)])
def test_splits_cut_across_the_scan_chunks_as_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[str, int]
) -> None:
    """A file scanned in many chunks (row ends found a chunk at a time) is cut exactly as
    one scanned in one go: rows counted on from chunk to chunk, no split lost or doubled."""
    path = tmp_path / "data.csv"
    lines = ["id,text"] + [f"{i},{'x' * (i % 13)}" for i in range(537)]
    path.write_text("\n".join(lines) + "\n\n")
    whole = plan_splits([str(path)], size)
    monkeypatch.setattr(csvscan, "_CHUNK", 61)  # a few rows a chunk, cut mid-line
    chunked = plan_splits([str(path)], size)
    assert chunked == whole
    assert sum(s.n_rows for s in chunked) == 537
    assert [s.first_row for s in chunked] == list(
        itertools.accumulate([0] + [s.n_rows for s in chunked[:-1]])
    )
    assert chunked[-1].stop == path.stat().st_size
    if size[0] == "rows":
        assert all(s.n_rows == size[1] for s in chunked[:-1])
