"""``daskscore.score()`` keeps the values ``run()`` returned, whatever Dask's
``dataframe.convert-string``.

With it on (Dask's default) Dask declared every object column text and ``str()``-ed each value
of every partition: a 2000-value embedding came back as the truncated text
``'[0.000e+00 ... ]'``, a dict or a Decimal as its ``repr``, and a column of bytes failed the
computation with a bare ``UnicodeDecodeError`` naming no mini-batch.  Now object columns stay
object, holding the same Python values, and only a column whose values are all text becomes
Dask's string dtype; the frame's declared dtypes are those of the computed partitions.
Real worker processes: the module's LocalCluster.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import pytest
from conftest import write_deployment, write_inputs

import daskscore

N_FILES, SIZE = 8, 2

SCRIPT = """
    import decimal
    import os

    import numpy as np
    import pandas as pd

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        n = [int(name[1:5]) for name in names]
        frame = pd.DataFrame(
            {
                "file": names,
                "embedding": [np.arange(2000.0) + i for i in n],
                "meta": [{"n": i, "tags": ["a"]} for i in n],
                "amount": [decimal.Decimal(f"{i}.10") for i in n],
                "digest": [b"\\xb5\\x00" + name.encode() for name in names],  # (not UTF-8)
            }
        )
        if os.environ.get("NOTE"):  # text in mini-batch 0, bytes in the others
            frame["note"] = ["ok" if i < 2 else b"\\xff" for i in n]
        return frame
"""


@pytest.fixture(params=[True, False], ids=["convert-string", "no-convert-string"])
def convert_string(request: pytest.FixtureRequest) -> Iterator[bool]:
    """The caller's global Dask setting, while the frame is made and computed."""
    with dask.config.set({"dataframe.convert-string": request.param}):
        yield request.param


def _score(tmp_path: Path, sessions: list[Any], **kwargs: Any) -> Any:
    env = {"NOTE": "1"} if kwargs.pop("note", False) else {}
    dep = write_deployment(
        tmp_path / "deploy",
        SCRIPT,
        settings={"mini_batch_size": SIZE, "environment_variables": env},
    )
    ddf = daskscore.score(dep, write_inputs(tmp_path / "in", N_FILES), progress=False, **kwargs)
    sessions.append(ddf.attrs["daskscore"])
    return ddf


def _check_values(frame: pd.DataFrame) -> None:
    assert len(frame) == N_FILES
    for i, row in enumerate(frame.itertuples(index=False)):
        name = f"f{i:04d}.csv"
        assert isinstance(row.embedding, np.ndarray) and row.embedding.shape == (2000,)
        np.testing.assert_array_equal(row.embedding, np.arange(2000.0) + i)
        assert row.meta == {"n": i, "tags": ["a"]}
        assert row.amount == decimal.Decimal(f"{i}.10")
        assert row.digest == b"\xb5\x00" + name.encode()
        assert row.file == name


def test_object_columns_keep_the_python_values_run_returned(
    tmp_path: Path, sessions: list[Any], convert_string: bool
) -> None:
    ddf = _score(tmp_path, sessions)
    for column in ("embedding", "meta", "amount", "digest"):
        assert ddf.dtypes[column] == np.dtype(object), column
    if convert_string:  # (a column of text becomes Dask's string dtype, as Dask makes it)
        assert ddf.dtypes["file"] == pd.StringDtype("pyarrow")
    frame = ddf.compute()
    assert frame.dtypes.to_dict() == ddf.dtypes.to_dict(), "declared as computed"
    _check_values(frame)
    _check_values(ddf.head(N_FILES, npartitions=-1))


def test_given_meta_is_kept_as_given(
    tmp_path: Path, sessions: list[Any], convert_string: bool
) -> None:
    meta = pd.DataFrame(
        {
            "file": pd.Series(dtype=object),
            **{c: pd.Series(dtype=object) for c in ("embedding", "meta", "amount", "digest")},
        }
    )
    ddf = _score(tmp_path, sessions, meta=meta)
    assert set(ddf.dtypes) == {np.dtype(object)}
    frame = ddf.compute()
    assert set(frame.dtypes) == {np.dtype(object)}
    _check_values(frame)


def test_a_text_column_of_mini_batch_0_that_later_holds_bytes_keeps_them(
    tmp_path: Path, sessions: list[Any], convert_string: bool
) -> None:
    """Declared from mini-batch 0 (text there): a later mini-batch's bytes are kept as
    returned (with a warning in the log), not decoded, and the computation does not fail."""
    ddf = _score(tmp_path, sessions, note=True)
    frame = ddf.compute()
    assert frame["note"].tolist() == ["ok", "ok"] + [b"\xff"] * (N_FILES - 2)
    _check_values(frame)


NULLS_FIRST = """
    import os

    import pandas as pd

    def run(mini_batch):
        n = [int(os.path.basename(p)[1:5]) for p in mini_batch]
        # no answer for the first files: None, then numbers
        return pd.DataFrame({"n": n, "score": [None if i < 2 else i * 10 for i in n]})
"""


def test_a_column_only_null_in_mini_batch_0_is_said_to_be_undeclared(
    tmp_path: Path, sessions: list[Any]
) -> None:
    """Its dtype cannot be inferred from mini-batch 0: a warning names it and says how to
    declare it (before, later numbers silently stayed objects and ``.sum()`` failed)."""
    dep = write_deployment(tmp_path / "deploy", NULLS_FIRST, settings={"mini_batch_size": SIZE})
    inputs = write_inputs(tmp_path / "in", N_FILES)
    with pytest.warns(UserWarning, match=r"column\(s\) 'score' held no value but nulls"):
        ddf = daskscore.score(dep, inputs, progress=False)
    sessions.append(ddf.attrs["daskscore"])
    meta = pd.DataFrame({"n": pd.Series(dtype="int64"), "score": pd.Series(dtype="float64")})
    declared = daskscore.score(dep, inputs, progress=False, meta=meta)
    sessions.append(declared.attrs["daskscore"])
    assert declared["score"].sum().compute() == sum(i * 10 for i in range(2, N_FILES))


INDEXED = """
    import os

    import pandas as pd

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if os.environ.get("AS_LIST"):
            return names
        return pd.DataFrame({"score": [0.5] * len(names)}, index=pd.Index(names, name="file"))
"""


@pytest.mark.parametrize("as_list", [False, True], ids=["frame", "list"])
def test_each_partition_keeps_the_index_run_returned(
    tmp_path: Path, sessions: list[Any], as_list: bool
) -> None:
    """A frame indexed by file name keeps those names (they were replaced by 0..n-1 over the
    partition, and ``.loc`` by name found nothing); a list's rows are 0, 1, ... per
    mini-batch, as the docs say."""
    env = {"AS_LIST": "1"} if as_list else {}
    dep = write_deployment(
        tmp_path / "deploy",
        INDEXED,
        settings={"mini_batch_size": SIZE, "environment_variables": env},
    )
    ddf = daskscore.score(dep, write_inputs(tmp_path / "in", N_FILES), progress=False, partitions=1)
    sessions.append(ddf.attrs["daskscore"])
    frame = ddf.compute()
    names = [f"f{i:04d}.csv" for i in range(N_FILES)]
    if as_list:
        assert frame.index.tolist() == list(range(SIZE)) * (N_FILES // SIZE)
        assert frame["prediction"].tolist() == names
    else:
        assert frame.index.name == "file" and frame.index.tolist() == names
        assert ddf.loc["f0003.csv"].compute()["score"].tolist() == [0.5]


DUPLICATED = """
    import pandas as pd

    def run(mini_batch):
        return pd.DataFrame([[1, 2]] * len(mini_batch), columns=["p", "p"])
"""


@pytest.mark.parametrize("given_meta", [False, True], ids=["inferred", "meta"])
def test_a_column_name_run_returns_twice_is_refused_by_name(
    tmp_path: Path, sessions: list[Any], given_meta: bool
) -> None:
    """Before, mini-batch 0's inference failed with ``AttributeError: 'DataFrame' object has
    no attribute 'dtype'`` (``frame['p']`` of a repeated name is a DataFrame)."""
    dep = write_deployment(tmp_path / "deploy", DUPLICATED, settings={"mini_batch_size": SIZE})
    inputs = write_inputs(tmp_path / "in", N_FILES)
    twice = r"column\(s\) \['p'\] more than once in the partition from mini-batch 0"
    if not given_meta:
        with pytest.raises(daskscore.UsageError, match=twice):
            daskscore.score(dep, inputs, progress=False)
        return
    meta = pd.DataFrame({"p": pd.Series(dtype="int64")})
    ddf = daskscore.score(dep, inputs, progress=False, meta=meta, partitions=1)
    sessions.append(ddf.attrs["daskscore"])
    with pytest.raises(daskscore.UsageError, match=twice):
        ddf.compute()


BIG_INTS = """
    import os

    import pandas as pd

    def run(mini_batch):
        n = [int(os.path.basename(p)[1:5]) for p in mini_batch]
        return pd.DataFrame({"v": [2**60 + 1 + 2 * i for i in n]})
"""


def test_ints_a_declared_float_would_round_are_kept(tmp_path: Path, sessions: list[Any]) -> None:
    """int64 values past 2**53 are not converted to a declared float64 (``cast == values``
    compared them as floats: 2**60 + 1 became 2**60, silently)."""
    dep = write_deployment(tmp_path / "deploy", BIG_INTS, settings={"mini_batch_size": SIZE})
    meta = pd.DataFrame({"v": pd.Series(dtype="float64")})
    ddf = daskscore.score(
        dep, write_inputs(tmp_path / "in", N_FILES), progress=False, meta=meta, partitions=2
    )
    sessions.append(ddf.attrs["daskscore"])
    part = ddf.partitions[0].compute()
    assert part["v"].dtype == np.dtype("int64")
    assert part["v"].tolist() == [2**60 + 1 + 2 * i for i in range(N_FILES // 2)]
