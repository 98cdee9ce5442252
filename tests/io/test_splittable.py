"""The compact split table: whatever splits it is given, it gives them back, one by one, as
slices and as the columns a task's payload carries; a file cut by rows costs it 4 bytes a
split."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from daskscore.io.splittable import Cuts, SplitTable
from daskscore.io.tabular import Split, plan_cuts, plan_splits


def _as_splits(table: SplitTable, a: int, b: int) -> list[Split]:
    """Splits ``a .. b-1`` made from the table's runs, as a task's payload carries them."""
    return [split for path, kind, cuts in table.runs(a, b) for split in cuts.splits(path, kind)]


def test_a_file_cut_by_rows_keeps_its_byte_offsets_only(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(10_003)) + "\n\n")
    for n in (1, 7, 10_003, 20_000):
        planned = list(plan_cuts([str(path)], ("rows", n)))
        ((_, _, cuts),) = planned
        assert cuts.every == n and cuts.first is None and cuts.rows is None
        table = SplitTable.from_cuts(planned)
        splits = plan_splits([str(path)], ("rows", n))
        assert table == splits and len(table) == -(-10_003 // n)
        assert table.nbytes() == 4 * (len(table) + 1)  # uint32 offsets, one more than splits
        assert splits[-1].stop == path.stat().st_size  # (the trailing blank lines included)
        assert sum(s.n_rows or 0 for s in splits) == table.planned_total() == 10_003
        assert _as_splits(table, 0, len(table)) == splits


def test_odd_runs_keep_first_rows_and_counts() -> None:
    splits = [
        Split("/a.csv", "csv", 4, 10, 0, 3),  # irregular counts
        Split("/a.csv", "csv", 10, 30, 3, 5),
        Split("/a.csv", "csv", 30, 31, 8, 1),
        Split("/a.csv", "csv", 50, 60, 20, None),  # not where the last stopped: a new run
        Split("/b.parquet", "parquet", 0, 2, 0, 100),  # regular, the last shorter
        Split("/b.parquet", "parquet", 2, 4, 100, 100),
        Split("/b.parquet", "parquet", 4, 5, 200, 7),
        Split("/c.csv", "csv", 5 << 32, 6 << 32, 1 << 33, 7),  # a file of > 4 GiB
        Split("/a.csv", "csv", 60, 70, 21, 2),  # a file met again
    ]
    table = SplitTable(iter(splits))
    assert list(table) == splits and table[-1] == splits[-1] and table[2:6] == splits[2:6]
    assert [table.planned(i) for i in range(len(splits))] == [3, 5, 1, 0, 100, 100, 7, 7, 2]
    assert table.planned_total() == 225
    for a in range(len(splits)):
        for b in range(a, len(splits) + 1):
            assert _as_splits(table, a, b) == splits[a:b]
    runs = [(path, len(cuts), cuts.every) for path, _, cuts in table.runs(0, len(splits))]
    assert runs == [("/a.csv", 3, 0), ("/a.csv", 1, 0), ("/b.parquet", 3, 100),
                    ("/c.csv", 1, 7), ("/a.csv", 1, 2)]  # fmt: skip
    assert [len(c) for _, _, c in table.runs(1, 6)] == [2, 1, 2]


def test_an_empty_table() -> None:
    for table in (SplitTable([]), SplitTable.from_cuts([])):
        assert table == [] and len(table) == 0 and table.planned_total() == 0
        assert list(table.runs(0, 0)) == []
    assert Cuts.of_rows([]) == []


_split = st.builds(
    lambda path, start, size, first, rows: Split(path, "csv", start, start + size, first, rows),
    st.sampled_from(["/x.csv", "/y.csv"]),
    st.sampled_from([0, 10, 20, 30, 1 << 32]),
    st.sampled_from([0, 10]),
    st.sampled_from([0, 3, 6, 1 << 40]),
    st.one_of(st.none(), st.sampled_from([0, 1, 3])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_split, max_size=12), st.data())
def test_any_splits_come_back_as_given(splits: list[Split], data: st.DataObject) -> None:
    table = SplitTable(splits)
    assert list(table) == splits and len(table) == len(splits)
    assert table.planned_total() == sum(s.n_rows or 0 for s in splits)
    a = data.draw(st.integers(0, len(splits)))
    b = data.draw(st.integers(a, len(splits)))
    assert _as_splits(table, a, b) == splits[a:b]


def test_a_file_of_more_than_4_gib_cut_by_rows_keeps_64_bit_offsets() -> None:
    """The offsets of a file past 4 GiB do not fit 32 bits: they are kept as int64, and a
    file under it as uint32 (the row ends as the scanner gives them, chunk by chunk)."""
    import numpy as np

    from daskscore.io import tabular

    for base in (0, 5 << 32):
        ends = [np.array([base + 10, base + 20, base + 30]), np.array([base + 40, base + 50])]
        size = base + 55  # (the bytes after the last row end go to the last split)
        (cuts,) = tabular._cut_rows(iter(ends), base + 4, size, "rows", 2)
        assert cuts.edges.dtype == (np.int64 if base else np.uint32)
        table = SplitTable.from_cuts([("/big.csv", "csv", cuts)])
        assert list(table) == [
            Split("/big.csv", "csv", base + 4, base + 20, 0, 2),
            Split("/big.csv", "csv", base + 20, base + 40, 2, 2),
            Split("/big.csv", "csv", base + 40, size, 4, 1),
        ]


def test_ranges_say_which_rows_each_split_holds_not_where_its_bytes_are() -> None:
    """What a resume compares per file: its splits, rows, and a digest of each split's first
    row and rows, the same however the table keeps them; byte offsets and the lines of a
    split not counted (a file not cut) do not count."""
    import numpy as np

    def ranges(*runs: tuple[str, str, Cuts]) -> dict[str, tuple[int, int, str]]:
        return SplitTable.from_cuts(runs).ranges()

    edges = np.array([4, 20, 40, 45], np.uint32)
    regular = ranges(("/a.csv", "csv", Cuts(edges, 0, 10, 3)))
    assert [(n, rows) for n, rows, _ in regular.values()] == [(3, 23)]
    listed = Cuts(edges.astype(np.int64), first=np.array([0, 10, 20]), rows=np.array([10, 10, 3]))
    assert ranges(("/a.csv", "csv", listed)) == regular  # (kept as lists: the same digest)
    longer = Cuts(np.array([4, 90, 200, 230], np.uint32), 0, 10, 3)  # longer rows
    assert ranges(("/a.csv", "csv", longer))["/a.csv"][2] == regular["/a.csv"][2]
    moved = Cuts(edges, first=np.array([0, 11, 20]), rows=np.array([11, 9, 3]))
    assert ranges(("/a.csv", "csv", moved))["/a.csv"][2] != regular["/a.csv"][2]
    more = Cuts(np.array([4, 20, 40, 60], np.uint32), 0, 10, 4)  # a row appended
    assert ranges(("/a.csv", "csv", more))["/a.csv"][2] != regular["/a.csv"][2]
    split_in_two = [("/a.csv", "csv", listed.slice(0, 1)), ("/a.csv", "csv", listed.slice(1, 3))]
    assert ranges(*split_in_two) == regular
    table = SplitTable.from_cuts([*split_in_two, ("/b.csv", "csv", listed)])
    assert list(table.ids_of({"/a.csv"})) == [("/a.csv", range(0, 1)), ("/a.csv", range(1, 3))]
    assert list(table.ids_of({"/b.csv", "/c.csv"})) == [("/b.csv", range(3, 6))]
    # a file not cut: its one split holds the whole file, whatever its lines (a mini-batch of
    # it kept by a resume is checked by its lines apart: engine.resume.check_uncut)
    whole = [Cuts.of_rows([[4, 99, 0, -1 - lines]])[0] for lines in (7, 9)]
    uncut = [ranges(("/q.csv", "csv", cuts))["/q.csv"] for cuts in whole]
    assert uncut[0][2] == uncut[1][2] and (uncut[0][:2], uncut[1][:2]) == ((1, 7), (1, 9))
    # two files: one entry each; a file with no rows has none
    both = ranges(("/a.csv", "csv", Cuts(edges, 0, 10, 3)), ("/b.pq", "parquet", longer))
    assert sorted(both) == ["/a.csv", "/b.pq"] and both["/a.csv"] == regular["/a.csv"]
    assert both["/b.pq"][2] != regular["/a.csv"][2]  # (another kind of file)
    assert SplitTable([]).ranges() == {}
