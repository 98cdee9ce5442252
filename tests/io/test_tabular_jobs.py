"""Integration tests of tabular jobs: CSV and Parquet inputs cut into DataFrame mini-batches.

Every job runs on the module's LocalCluster (the ``client`` fixture).  The input is two CSV and
two Parquet files whose column ``fid`` holds the file's number and ``id`` a row id unique over
all files.  The scoring script asserts that ``run()`` receives a pandas DataFrame whose rows all
come from one file, and notes each mini-batch it sees (file, first row, length) in a marker
file in ``AZUREML_BI_OUTPUT_PATH``; the tests compare the predictions with the concatenated
input: every row scored exactly once, in order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import write_deployment
from helpers import processed_of

import daskscore
from daskscore.io import rowstore

#: (name, kind, rows): sorted by name, the order the job reads them
FILES = [("part0.csv", 300), ("part1.parquet", 200), ("part2.csv", 170), ("part3.parquet", 60)]
ROW_GROUP = 20
FIRST_ID = 1000

SCRIPT = """
    import os
    import uuid

    import pandas as pd

    MODE = os.environ.get("MODE", "full")

    def init():
        pass

    def run(mini_batch):
        assert isinstance(mini_batch, pd.DataFrame), f"run() got a {type(mini_batch).__name__}"
        files = sorted(set(mini_batch["fid"]))
        assert len(files) == 1, f"one mini-batch holds rows of files {files}"
        first = int(mini_batch.index[0])
        name = f"mb-{files[0]}-{first:05d}-{uuid.uuid4().hex[:8]}.json"
        with open(os.path.join(os.environ["AZUREML_BI_OUTPUT_PATH"], name), "w") as fh:
            fh.write(f'{{"fid": {files[0]}, "first": {first}, "rows": {len(mini_batch)}}}')
        pred = mini_batch["v"] * 2 + 1
        if MODE == "pred":
            return pd.DataFrame({"pred": pred})
        if MODE == "sorted":  # the best-scored rows first, each keeping its input's index
            return pd.DataFrame({"pred": pred}).sort_values("pred", ascending=False)
        out = pd.DataFrame({"fid": mini_batch["fid"], "id": mini_batch["id"], "pred": pred})
        if MODE == "drop_last" and first == 0:
            out = out.iloc[:-1]  # the first mini-batch of each file: one row short
        return out
"""


# --------------------------------------------------------------------------- fixtures, helpers


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """The input folder, and all its rows concatenated in file order (with ``file``, ``row``)."""
    folder = tmp_path_factory.mktemp("tabular") / "in"
    folder.mkdir()
    frames, next_id = [], FIRST_ID
    for fid, (name, rows) in enumerate(FILES):
        frame = pd.DataFrame(
            {
                "id": np.arange(next_id, next_id + rows, dtype="int64"),
                "fid": fid,
                "v": np.round(np.arange(rows) * 0.25 + fid, 2),
            }
        )
        next_id += rows
        path = folder / name
        if name.endswith(".csv"):
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False, row_group_size=ROW_GROUP)
        frames.append(frame.assign(file=str(path.resolve()), row=np.arange(rows)))
    return folder, pd.concat(frames, ignore_index=True)


def deploy(root: Path, mini_batch_size: int | str, mode: str = "full") -> Path:
    return write_deployment(
        root / "deploy",
        SCRIPT,
        settings={"mini_batch_size": mini_batch_size, "environment_variables": {"MODE": mode}},
    )


def seen(out: Path) -> pd.DataFrame:
    """The mini-batches run() saw: fid, first row, rows; sorted."""
    records = [json.loads(p.read_text()) for p in out.glob("mb-*.json")]
    return pd.DataFrame(records).sort_values(["fid", "first"]).reset_index(drop=True)


def append_rows(path: Path, names: list[str]) -> pd.DataFrame:
    return pd.read_csv(path, sep=" ", header=None, names=names)


def check_splits(batches: pd.DataFrame) -> None:
    """Each file's mini-batches cover its rows 0..n-1 once, back to back."""
    for fid, (_, rows) in enumerate(FILES):
        mine = batches[batches["fid"] == fid]
        assert mine["rows"].sum() == rows, f"file {fid}: {mine}"
        starts = np.concatenate(([0], np.cumsum(mine["rows"].to_numpy())[:-1]))
        assert mine["first"].tolist() == starts.tolist(), f"file {fid}: {mine}"


# --------------------------------------------------------------------------- every row once


@pytest.mark.parametrize(
    ("mini_batch_size", "tabular"),
    [("2KB", None), ("7 rows", None), (1500, True)],
    ids=["2KB-auto", "7-rows-auto", "1500-bytes-tabular"],
)
def test_every_input_row_is_scored_once_in_order(
    client: Any,
    tmp_path: Path,
    table: tuple[Path, pd.DataFrame],
    mini_batch_size: int | str,
    tabular: bool | None,
) -> None:
    folder, rows = table
    dep = deploy(tmp_path, mini_batch_size)
    out = tmp_path / "out"
    result = daskscore.run(dep, folder, out, client=client, tabular=tabular)

    assert result.status == "Completed"
    assert result.total_items == len(rows) and result.succeeded_items == len(rows)
    assert result.failed_items == 0, result.summary["failures"]
    got = append_rows(out / "predictions.csv", ["fid", "id", "pred"])
    assert got["id"].tolist() == rows["id"].tolist(), "every row exactly once, in order"
    assert got["fid"].tolist() == rows["fid"].tolist()
    np.testing.assert_allclose(got["pred"], rows["v"] * 2 + 1)

    batches = seen(out)
    assert len(batches) == result.total_mini_batches, "each mini-batch ran once"
    assert len(batches) > len(FILES), "the files were cut into several mini-batches"
    assert set(batches["fid"]) == set(range(len(FILES)))
    check_splits(batches)
    if mini_batch_size == "7 rows":
        for fid, (name, n) in enumerate(FILES):
            sizes = batches.loc[batches["fid"] == fid, "rows"].tolist()
            if name.endswith(".csv"):
                assert sizes == [7] * (n // 7) + ([n % 7] if n % 7 else []), (name, sizes)
            else:  # whole row groups of at most 7 rows together, or one bigger row group
                assert sizes == [ROW_GROUP] * (n // ROW_GROUP), (name, sizes)


def test_bare_number_without_tabular_means_files(
    client: Any, tmp_path: Path, table: tuple[Path, pd.DataFrame]
) -> None:
    """The same bare number without --tabular is a file count: run() gets paths (and fails)."""
    folder, _ = table
    dep = deploy(tmp_path, 1500)
    result = daskscore.run(dep, folder, tmp_path / "out", client=client, max_retries=0)
    assert result.total_mini_batches == 1 and result.total_items == len(FILES)
    assert result.failed_items == len(FILES)
    assert "run() got a list" in result.summary["failures"][0]["error"]


# ------------------------------------------------------------------------ carry, partial, datasets


def test_carry_columns_join_input_columns(
    client: Any, tmp_path: Path, table: tuple[Path, pd.DataFrame]
) -> None:
    folder, rows = table
    dep = deploy(tmp_path, "7 rows", mode="pred")
    out = tmp_path / "out"
    result = daskscore.run(
        dep, folder, out, client=client, carry_columns=["id", "file", "row"], max_retries=0
    )
    assert result.status == "Completed" and result.failed_items == 0, result.summary["failures"]
    got = append_rows(out / "predictions.csv", ["id", "file", "row", "pred"])
    assert got["id"].tolist() == rows["id"].tolist()
    assert got["file"].tolist() == rows["file"].tolist(), "file: the input file's path"
    assert got["row"].tolist() == rows["row"].tolist(), "row: the row's number in its file"
    np.testing.assert_allclose(got["pred"], rows["v"] * 2 + 1)


@pytest.mark.parametrize("output", ["append_row", "parquet", "csv", "score"])
def test_carry_columns_follow_the_rows_run_returned_in_another_order(
    client: Any, tmp_path: Path, table: tuple[Path, pd.DataFrame], output: str
) -> None:
    """run() returns its rows sorted by score, each keeping its input's index (row number):
    every row gets its own input columns (matched by label), in every output, and the rows
    come in the order run() returned them."""
    folder, rows = table
    dep = deploy(tmp_path, "7 rows", mode="sorted")
    out = tmp_path / "out"
    carry = ["id", "file", "row"]
    if output == "score":
        ddf = daskscore.score(dep, folder, client=client, carry_columns=carry)
        got = ddf.compute()
        ddf.attrs["daskscore"].close()
        assert got.index.tolist() == got["row"].tolist(), "the index run() gave, kept"
    else:
        kw = {} if output == "append_row" else {"output_format": output}
        result = daskscore.run(dep, folder, out, client=client, carry_columns=carry, **kw)
        assert result.status == "Completed" and result.failed_items == 0, result.summary
        if output == "append_row":
            got = append_rows(out / "predictions.csv", ["id", "file", "row", "pred"])
        elif output == "parquet":
            got = pd.read_parquet(out / "predictions")
        else:
            got = pd.concat(pd.read_csv(p) for p in sorted((out / "predictions").glob("*.csv")))
    assert len(got) == len(rows)
    want = rows.set_index("id").loc[got["id"]]
    assert got["file"].astype(str).tolist() == want["file"].tolist()
    assert got["row"].tolist() == want["row"].tolist()
    np.testing.assert_allclose(got["pred"], want["v"] * 2 + 1, err_msg="another row's input")
    assert sorted(got["id"]) == rows["id"].tolist(), "every row once"
    assert not got["id"].is_monotonic_increasing, "the rows as run() ordered them"


@pytest.mark.parametrize(
    ("carry", "lacking", "columns"),
    [(["nope"], "a.csv", "fid, id, v, extra"), (["id", "extra"], "b.parquet", "key, fid, id, v")],
    ids=["none-has-it", "the-parquet-file-lacks-it"],
)
@pytest.mark.parametrize("entry", ["run", "score"])
def test_a_carried_column_an_input_file_lacks_is_refused_before_scoring(
    client: Any, tmp_path: Path, carry: list[str], lacking: str, columns: str, entry: str
) -> None:
    """A carried column is looked for in every input file's header (CSV) or schema (Parquet,
    its stored index included) when the job is planned: one a file lacks is a usage error
    naming the column, the file and the columns it has, before anything runs (it failed
    every try of every mini-batch, and the job ended Completed)."""
    folder = tmp_path / "in"
    folder.mkdir()
    frame = pd.DataFrame({"fid": [0, 0], "id": [1, 2], "v": [0.5, 1.5]})
    frame.assign(extra=["a", "b"]).to_csv(folder / "a.csv", index=False)
    frame.set_index(pd.Index([7, 8], name="key")).to_parquet(folder / "b.parquet")
    dep = deploy(tmp_path, "7 rows", mode="pred")
    out = tmp_path / "out"
    with pytest.raises(daskscore.UsageError) as caught:
        if entry == "run":
            daskscore.run(dep, folder, out, client=client, carry_columns=carry)
        else:
            daskscore.score(dep, folder, client=client, carry_columns=carry)
    text = str(caught.value)
    assert f"'{(folder / lacking).resolve()}' has no column '{carry[-1]}'" in text, text
    assert f"its columns (what run() gets) are {columns}," in text, text
    assert "\n" not in text and not out.exists(), "nothing ran, no output folder"


@pytest.mark.parametrize("carry", [["id"], ["file"]])
def test_carry_columns_in_file_mode_are_refused(
    client: Any, tmp_path: Path, table: tuple[Path, pd.DataFrame], carry: list[str]
) -> None:
    """File mode has no input rows to join: --carry-columns (even file) is a usage error
    before anything runs, not silently ignored."""
    folder, _ = table
    dep = deploy(tmp_path, 2)
    out = tmp_path / "out"
    with pytest.raises(daskscore.UsageError, match="needs tabular mode") as caught:
        daskscore.run(dep, folder, out, client=client, carry_columns=carry)
    assert f"carry_columns=) {carry[0]}:" in str(caught.value)
    assert "--tabular" in str(caught.value)
    assert not out.exists()


@pytest.mark.parametrize(
    ("carry", "twice"), [(["id", "id"], "'id'"), (["file", "row", "file", "row"], "'file', 'row'")]
)
@pytest.mark.parametrize("entry", ["run", "score"])
def test_a_column_carried_twice_is_refused_before_scoring(
    client: Any,
    tmp_path: Path,
    table: tuple[Path, pd.DataFrame],
    carry: list[str],
    twice: str,
    entry: str,
) -> None:
    """``--carry-columns id,id`` (``file,file``, ``row,row``) was taken: every try of every
    mini-batch then failed ("'id' is already taken") and the job ended Completed, exit 0."""
    folder, _ = table
    dep = deploy(tmp_path, "50 rows", mode="pred")
    out = tmp_path / "out"
    with pytest.raises(daskscore.UsageError) as caught:
        if entry == "run":
            daskscore.run(dep, folder, out, client=client, carry_columns=carry)
        else:
            daskscore.score(dep, folder, client=client, carry_columns=carry)
    text = str(caught.value)
    assert f"{twice} named more than once" in text and "\n" not in text, text
    assert not out.exists(), "nothing ran, no output folder"


def test_partial_returns_count_failed_rows(
    client: Any, tmp_path: Path, table: tuple[Path, pd.DataFrame]
) -> None:
    folder, rows = table
    dep = deploy(tmp_path, "7 rows", mode="drop_last")
    out = tmp_path / "out"
    result = daskscore.run(dep, folder, out, client=client)

    batches = seen(out)
    firsts = batches[batches["first"] == 0]
    assert len(firsts) == len(FILES)
    dropped = {(int(b.fid), int(b.rows) - 1) for b in firsts.itertuples()}  # (fid, row)
    assert result.status == "Completed", "error_threshold -1 allows failed rows"
    assert result.total_items == len(rows)
    assert result.failed_items == len(FILES), "one row short in one mini-batch per file"
    assert result.succeeded_items == len(rows) - len(FILES)
    assert result.partial_mini_batches == len(FILES)
    assert result.rows_written == len(rows) - len(FILES)
    failures = result.summary["failures"]
    assert len(failures) == len(FILES) and all(f["failed"] == 1 for f in failures), failures

    got = append_rows(out / "predictions.csv", ["fid", "id", "pred"])
    keep = [(f, r) not in dropped for f, r in zip(rows["fid"], rows["row"], strict=True)]
    assert got["id"].tolist() == rows.loc[keep, "id"].tolist()


@pytest.mark.parametrize("partition_on", [None, "file"], ids=["flat", "by-file"])
def test_tabular_job_writes_parquet(
    client: Any, tmp_path: Path, table: tuple[Path, pd.DataFrame], partition_on: str | None
) -> None:
    folder, rows = table
    dep = deploy(tmp_path, "2KB", mode="pred")
    out = tmp_path / "out"
    result = daskscore.run(
        dep,
        folder,
        out,
        client=client,
        output_format="parquet",
        carry_columns=["id", "file", "row"],
        partition_on=partition_on,
        rows_per_file=250,
    )
    assert result.status == "Completed" and result.rows_written == len(rows)
    dest = out / "predictions"
    want = rows[["id", "file", "row"]].assign(pred=rows["v"] * 2 + 1)
    files = sorted(p for p in dest.rglob("*") if p.is_file())
    if partition_on is None:
        assert [p.name for p in files] == [f"part-{i:05d}.parquet" for i in range(len(files))]
        assert len(files) > 1, "rows_per_file=250 cuts the dataset"
        got = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)
        assert list(got.columns) == ["id", "file", "row", "pred"]
        assert str(got["id"].dtype) == "int64" and str(got["row"].dtype) == "int64"
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
    else:
        # input paths hold "/": each stays one folder, and reads back as the path
        for path in files:
            assert path.resolve().relative_to(dest.resolve()).parts[0].startswith("file=")
            assert len(path.relative_to(dest).parts) == 2
        got = pd.read_parquet(dest).assign(file=lambda f: f["file"].astype(str))
        got = got.sort_values("id").reset_index(drop=True)
        assert sorted(set(got["file"])) == sorted(set(rows["file"]))
        pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)


# ------------------------------------------------------------------------ the books in a file


@pytest.mark.parametrize("output_format", ["append_row", "parquet"])
def test_a_job_with_its_books_in_a_file_writes_what_one_in_memory_writes(
    client: Any,
    tmp_path: Path,
    table: tuple[Path, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
    output_format: str,
) -> None:
    """The driver's rows of clean mini-batches go to a file past a budget (a big job's): the
    same job, one row short in some mini-batches (kept whole), writes the same output and the
    same tries as with its books in memory."""
    folder, rows = table
    dep = deploy(tmp_path, "7 rows", mode="drop_last")
    jobs, made = {}, []
    temporary = rowstore.tempfile.TemporaryFile
    monkeypatch.setattr(
        rowstore.tempfile, "TemporaryFile", lambda **kw: made.append(kw) or temporary(**kw)
    )
    for where, budget in (("memory", 1 << 24), ("file", 0)):
        monkeypatch.setattr(rowstore, "IN_MEMORY_BYTES", budget)
        made.clear()
        out = tmp_path / where
        # append_row: predictions.csv, from byte ranges; parquet: part files
        parts = {"output_format": "parquet", "rows_per_file": 100}
        kw = parts if output_format == "parquet" else {}
        result = daskscore.run(dep, folder, out, client=client, **kw)  # type: ignore[arg-type]
        assert result.status == "Completed" and result.partial_mini_batches == len(FILES)
        assert len(made) == (where == "file"), "the books' rows went to a file"
        if output_format == "append_row":
            written = (out / "predictions.csv").read_bytes()
        else:
            written = pd.read_parquet(out / "predictions")
        tries = processed_of(out)
        jobs[where] = (result.summary["failures"], written, tries)
    assert jobs["file"][0] == jobs["memory"][0]
    if output_format == "append_row":
        assert jobs["file"][1] == jobs["memory"][1]
    else:
        pd.testing.assert_frame_equal(jobs["file"][1], jobs["memory"][1])
        assert len(jobs["file"][1]) == len(rows) - len(FILES)
    same = ["mini_batch_id", "try", "total", "succeeded", "failed", "status", "error"]
    on_file, in_memory = jobs["file"][2], jobs["memory"][2]
    assert len(on_file) == result.total_mini_batches
    pd.testing.assert_frame_equal(on_file[same], in_memory[same])
    assert on_file["worker"].notna().all() and (on_file["elapsed_s"] >= 0).all()
