"""Unit tests of daskscore.io.inputs: listing inputs, cutting mini-batches, sizing tasks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daskscore import InputError
from daskscore.engine.policy import MAX_TASK_MINI_BATCHES, next_task_size
from daskscore.io.inputs import (
    FileBatches,
    FileList,
    list_input_files,
    make_mini_batches,
)
from daskscore.io.splittable import SplitTable
from daskscore.io.tabular import Split


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


# --------------------------------------------------------------------------- list_input_files


def test_lists_recursively_sorted_by_full_path(tmp_path: Path) -> None:
    root = tmp_path / "in"
    # created out of order, nested at different depths
    touch(root, "c.csv", "b/z.csv", "a.csv", "b/a/y.csv", "b/b.csv", "d/e/f/g.csv")
    files = list_input_files(root)
    expected = ["a.csv", "b/a/y.csv", "b/b.csv", "b/z.csv", "c.csv", "d/e/f/g.csv"]
    assert files == [str((root / name).resolve()) for name in expected]
    assert files == sorted(files)
    assert all(os.path.isabs(f) for f in files)


def test_sorting_is_by_name_not_by_creation_or_size(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    for i in (10, 2, 1, 30):
        (root / f"f{i:03d}.csv").write_text("x" * (100 - i))
    names = [Path(f).name for f in list_input_files(root)]
    assert names == ["f001.csv", "f002.csv", "f010.csv", "f030.csv"]


def test_dot_files_and_dot_folders_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "in"
    touch(
        root,
        "a.csv",
        ".hidden.csv",
        ".ipynb_checkpoints/a-checkpoint.csv",
        "sub/.DS_Store",
        "sub/b.csv",
        "sub/.git/config",
    )
    files = list_input_files(root)
    assert files == [str((root / "a.csv").resolve()), str((root / "sub" / "b.csv").resolve())]


def test_pipes_and_sockets_are_skipped_and_noted_never_opened(tmp_path: Path) -> None:
    """A named pipe would make whoever opens it (the planner, run()) wait for a writer."""
    import socket

    root = tmp_path / "in"
    touch(root, "a.csv")
    os.mkfifo(root / "pipe.csv")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "s.sock"))
        notes: list[str] = []
        files = list_input_files(root, notes=notes)
    assert files == [str((root / "a.csv").resolve())]
    (note,) = notes
    assert "skipped 2 pipe(s), socket(s) or device(s)" in note and "pipe.csv" in note

    with pytest.raises(InputError, match="neither a file nor a folder"):
        list_input_files(root / "pipe.csv")
    (root / "a.csv").unlink()
    with pytest.raises(InputError, match="pipes, sockets and devices"):
        list_input_files(root)


def test_a_single_file_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path, "one.csv", "other.csv")
    monkeypatch.chdir(tmp_path)
    assert list_input_files("one.csv") == [str((tmp_path / "one.csv").resolve())]


def test_relative_folder_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(tmp_path / "in", "a.csv")
    monkeypatch.chdir(tmp_path)
    assert list_input_files("in") == [str((tmp_path / "in" / "a.csv").resolve())]


def test_missing_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as info:
        list_input_files(tmp_path / "nope")
    assert "nope" in str(info.value)


def test_empty_folder_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match="no files"):
        list_input_files(tmp_path / "in")


def test_folder_of_dot_files_only_is_an_input_error(tmp_path: Path) -> None:
    touch(tmp_path / "in", ".a", ".hidden/b.csv")
    with pytest.raises(InputError, match="dot-files"):
        list_input_files(tmp_path / "in")


def test_a_symlink_loop_lists_each_file_once(tmp_path: Path) -> None:
    root = tmp_path / "in"
    touch(root, "a.csv", "sub/b.csv")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    files = list_input_files(root)
    assert len(files) == 2
    assert {os.path.realpath(f) for f in files} == {
        str((root / "a.csv").resolve()),
        str((root / "sub" / "b.csv").resolve()),
    }


# --------------------------------------------------------------------------- make_mini_batches


def test_100_files_by_10() -> None:
    files = [f"f{i:03d}" for i in range(100)]
    batches = make_mini_batches(files, 10)
    assert len(batches) == 10
    assert all(len(b) == 10 for b in batches)
    assert batches[3] == files[30:40]
    assert [f for b in batches for f in b] == files


def test_the_last_batch_takes_the_remainder() -> None:
    files = [f"f{i:02d}" for i in range(25)]
    batches = make_mini_batches(files, 10)
    assert [len(b) for b in batches] == [10, 10, 5]
    assert batches[-1] == files[20:]


def test_size_one_and_size_larger_than_the_input() -> None:
    files = ["a", "b", "c"]
    assert make_mini_batches(files, 1) == [["a"], ["b"], ["c"]]
    assert make_mini_batches(files, 50) == [["a", "b", "c"]]
    assert make_mini_batches(files, 3) == [["a", "b", "c"]]


def test_mini_batches_are_new_lists() -> None:
    files = ["a", "b"]
    batches = make_mini_batches(files, 5)
    batches[0].append("c")
    assert files == ["a", "b"]


def test_no_files_no_batches_and_bad_size() -> None:
    assert make_mini_batches([], 10) == []
    with pytest.raises(ValueError):
        make_mini_batches(["a"], 0)


@settings(deadline=None, database=None)
@given(n=st.integers(0, 500), size=st.integers(1, 60))
def test_mini_batches_partition_the_files(n: int, size: int) -> None:
    files = [str(i) for i in range(n)]
    batches = make_mini_batches(files, size)
    assert [f for b in batches for f in b] == files
    assert len(batches) == -(-n // size)
    assert all(len(b) == size for b in batches[:-1])
    assert all(1 <= len(b) <= size for b in batches)


# --------------------------------------------------------------------------- next_task_size


def test_next_task_size_examples() -> None:
    assert next_task_size(0, 4) == 0
    assert next_task_size(1, 4) == 1
    assert next_task_size(3, 2) == 1
    assert next_task_size(10_000, 2) == 1250
    assert next_task_size(10**9, 1) == MAX_TASK_MINI_BATCHES
    assert next_task_size(100, 0) == next_task_size(100, 1)  # no workers yet: treat as one


@settings(max_examples=300, deadline=None, database=None)
@given(remaining=st.integers(1, 100_000), workers=st.integers(0, 64))
def test_next_task_size_is_between_one_and_remaining(remaining: int, workers: int) -> None:
    size = next_task_size(remaining, workers)
    assert 1 <= size <= remaining
    assert size <= MAX_TASK_MINI_BATCHES


@settings(max_examples=300, deadline=None, database=None)
@given(
    a=st.integers(1, 100_000),
    b=st.integers(1, 100_000),
    workers=st.integers(1, 64),
)
def test_next_task_size_shrinks_with_remaining(a: int, b: int, workers: int) -> None:
    low, high = sorted((a, b))
    assert next_task_size(low, workers) <= next_task_size(high, workers)


@settings(max_examples=200, deadline=None, database=None)
@given(
    remaining=st.integers(0, 20_000),
    workers=st.integers(1, 32),
    cap=st.integers(1, 3000),
)
def test_repeated_tasks_consume_exactly_remaining(remaining: int, workers: int, cap: int) -> None:
    left = remaining
    sizes = []
    while left > 0:
        size = next_task_size(left, workers, cap)
        assert 1 <= size <= min(left, cap)
        sizes.append(size)
        left -= size
    assert sum(sizes) == remaining
    assert sizes == sorted(sizes, reverse=True)  # early tasks big, the tail small


@settings(max_examples=300, deadline=None, database=None)
@given(
    remaining=st.integers(1, 50_000),
    workers=st.integers(1, 32),
    least=st.integers(1, 500),
)
def test_the_tails_floor(remaining: int, workers: int, least: int) -> None:
    """A floor on the task size (quick mini-batches): tasks are never smaller than the floor
    or the guided size, unless less than that is left."""
    size = next_task_size(remaining, workers, least=least)
    guided = next_task_size(remaining, workers)
    assert 1 <= size <= remaining
    assert size == min(remaining, MAX_TASK_MINI_BATCHES, max(guided, least))


def test_the_tails_floor_on_a_quick_job() -> None:
    """10,000 quick mini-batches on two workers: without a floor the last ~30 tasks carry
    one to ten mini-batches each; with a floor of 150 every task but the last has 150+."""

    def tasks(least: int) -> list[int]:
        left, sizes = 10_000, []
        while left:
            sizes.append(next_task_size(left, 2, least=least))
            left -= sizes[-1]
        return sizes

    plain, floored = tasks(1), tasks(150)
    assert sum(plain) == sum(floored) == 10_000
    assert sum(1 for s in plain if s <= 10) > 10
    assert min(floored[:-1]) >= 150 and len(floored) < len(plain) - 20


def test_a_folder_that_cannot_be_listed_is_an_input_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreadable sub-folder is not skipped quietly (its files would never be scored).
    Tests run as root here, where permissions do not stop a listing, so scandir is made to
    refuse that one folder as it would for another user."""
    root = tmp_path / "in"
    touch(root, "a.csv", "locked/b.csv")
    locked = str((root / "locked").resolve())
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(InputError, match="cannot be listed") as info:
        list_input_files(root)
    assert locked in str(info.value) and "Permission denied" in str(info.value)


# --------------------------------------------------------------------------- at scale


def test_a_folder_lists_as_sorted_full_paths_where_files_and_folders_interleave(
    tmp_path: Path,
) -> None:
    """A folder's files and its sub-folders' files interleave in path order: ``a.csv`` <
    ``a/x`` < ``a0.csv`` ('.' < '/' < '0'), ``a-b/y`` < ``a/x`` ('-' < '/')."""
    root = tmp_path / "in"
    names = ["a.csv", "a/x", "a/b/c", "a0.csv", "a-b/y", "b", "a/b.csv", "é/z", "z/a/b/c/d"]
    touch(root, *names)
    files = list_input_files(root)
    assert isinstance(files, FileList)
    expected = sorted(str(root.resolve() / n) for n in names)
    assert files == expected and list(files) == expected and len(files) == len(expected)
    assert [files[i] for i in range(-len(files), len(files))] == expected + expected
    assert files[2:5] == expected[2:5] and files[::2] == expected[::2] and files[4:2] == []
    with pytest.raises(IndexError):
        files[len(files)]


@settings(max_examples=40, deadline=None, database=None)
@given(
    paths=st.lists(
        st.lists(
            st.sampled_from(["a", "a.csv", "a0", "b-c", "B", "_", "a b"]), min_size=1, max_size=4
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_tree_lists_as_the_sorted_paths_of_its_files(
    tmp_path_factory: pytest.TempPathFactory, paths: list[list[str]]
) -> None:
    root = tmp_path_factory.mktemp("tree")
    made: set[Path] = set()
    for parts in paths:  # a file where nothing else is in the way
        path = root.joinpath(*parts)
        if any(p == path or p in path.parents or path in p.parents for p in made):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        made.add(path)
    expected = sorted(str(p) for p in made)
    files = list_input_files(root)
    assert list(files) == expected
    assert [files[i] for i in range(len(files))] == expected


def test_file_batches_cut_as_make_mini_batches_without_copying() -> None:
    files = [f"f{i:03d}" for i in range(25)]
    for size in (1, 3, 10, 25, 40):
        batches = FileBatches(files, size)
        assert batches == make_mini_batches(files, size)
        assert len(batches) == len(make_mini_batches(files, size))
        assert [batches.planned(i) for i in range(len(batches))] == [
            len(b) for b in make_mini_batches(files, size)
        ]
        assert batches.planned_total() == 25 and batches[-1] == make_mini_batches(files, size)[-1]
    batches = FileBatches(files, 10)
    batches[0].append("x")  # a new list each time
    assert batches[0] == files[:10]
    with pytest.raises(ValueError):
        FileBatches(files, 0)
    with pytest.raises(IndexError):
        batches[3]


def test_file_batches_of_a_packed_listing(tmp_path: Path) -> None:
    touch(tmp_path / "in", *[f"d{d}/f{i:02d}.csv" for d in range(3) for i in range(7)])
    files = list_input_files(tmp_path / "in")
    plain = list(files)
    for size in (1, 4, 7, 30):
        assert FileBatches(files, size) == make_mini_batches(plain, size)


def test_a_split_table_gives_back_the_splits() -> None:
    splits = [
        Split("/in/a.csv", "csv", 10, 400, 0, 20),
        Split("/in/a.csv", "csv", 400, 800, 20, None),
        Split("/in/b.parquet", "parquet", 0, 3, 0, 3000),
        Split("/in/c.csv", "csv", 5 * 1 << 32, 6 * 1 << 32, 1 << 33, 7),  # a file of > 4 GB
    ]
    table = SplitTable(iter(splits))
    assert len(table) == 4 and table == splits and list(table) == splits
    assert table[1].n_rows is None and table[-1] == splits[-1] and table[1:3] == splits[1:3]
    assert [table.planned(i) for i in range(4)] == [20, 0, 3000, 7]
    assert table.planned_total() == 3027
    assert SplitTable([]) == [] and SplitTable([]).planned_total() == 0


def test_each_workers_first_task_is_small_then_guided() -> None:
    """A worker starts on a task made and sent at once; the big guided ones follow behind it,
    and a job of few mini-batches is cut as before."""
    from daskscore.engine.policy import FIRST_TASK_MINI_BATCHES, TaskSizing

    sizing = TaskSizing()
    sizes = [sizing.next_size(10_000, 3) for _ in range(4)]
    assert sizes == [FIRST_TASK_MINI_BATCHES] * 3 + [next_task_size(10_000, 3)]
    sizing = TaskSizing()
    assert [sizing.next_size(8, 2) for _ in range(2)] == [1, 1]  # (guided: 8 / (2 * 4))
