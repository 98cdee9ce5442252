"""The dtypes a ``daskscore.score()`` frame declares are those Dask can trust downstream.

An object column (decimals, dicts, arrays) made ``ddf.to_parquet(path)`` fail with an
``ArrowInvalid`` about an ``<object object>`` (Dask infers the schema from placeholder values
of the declared dtypes), and nothing had said so: ``score()`` warns naming the columns and the
way to write them, which writes the values ``run()`` returned.

A categorical column was declared with mini-batch 0's categories as known ones: Dask's
``cat.codes`` gave the code of ``'cat'`` to a later partition's ``'bird'`` rows, and
``dd.get_dummies`` left that partition NaN, without a word.
Real worker processes: the module's LocalCluster.
"""

from __future__ import annotations

import decimal
import logging
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from conftest import write_deployment, write_inputs

import daskscore

N_FILES, SIZE = 8, 2

CATEGORIES = """
    import os

    import pandas as pd

    def run(mini_batch):
        n = [int(os.path.basename(p)[1:5]) for p in mini_batch]
        # cat and dog in the first half of the files, bird only after
        labels = [("cat" if i % 2 else "dog") if i < 4 else "bird" for i in n]
        return pd.DataFrame({"n": n, "label": pd.Categorical(labels)})
"""
LABELS = ["dog", "cat", "dog", "cat", "bird", "bird", "bird", "bird"]


def _score(tmp_path: Path, sessions: list[Any], script: str, **kwargs: Any) -> Any:
    dep = write_deployment(tmp_path / "deploy", script, settings={"mini_batch_size": SIZE})
    inputs = write_inputs(tmp_path / "in", N_FILES)
    ddf = daskscore.score(dep, inputs, progress=False, partitions=2, **kwargs)
    sessions.append(ddf.attrs["daskscore"])
    return ddf


def test_categories_that_differ_between_mini_batches_are_declared_unknown(
    tmp_path: Path, sessions: list[Any]
) -> None:
    ddf = _score(tmp_path, sessions, CATEGORIES)
    assert isinstance(ddf.dtypes["label"], pd.CategoricalDtype)
    assert not ddf["label"].cat.known, "mini-batch 0's categories are not every partition's"
    assert ddf.compute()["label"].tolist() == LABELS
    known = ddf["label"].cat.as_known()
    categories = list(known.cat.categories)
    assert sorted(categories) == ["bird", "cat", "dog"]
    assert [categories[c] for c in known.cat.codes.compute()] == LABELS
    dummies = dd.get_dummies(known).compute()
    assert dummies.sum().to_dict() == {"bird": 4, "cat": 2, "dog": 2}


def _meta(categories: list[str]) -> pd.DataFrame:
    label = pd.Series(pd.Categorical([], categories=categories))
    return pd.DataFrame({"n": pd.Series(dtype="int64"), "label": label})


def test_declared_categories_are_given_to_every_partition(
    tmp_path: Path, sessions: list[Any]
) -> None:
    """``meta=`` with known categories: each partition has them (their codes), so that
    Dask's ``cat.codes`` and ``get_dummies`` are right (each partition kept its own)."""
    declared = ["dog", "bird", "cat"]
    ddf = _score(tmp_path, sessions, CATEGORIES, meta=_meta(declared))
    assert ddf["label"].cat.known
    for i in range(ddf.npartitions):
        assert ddf.partitions[i].compute()["label"].dtype == pd.CategoricalDtype(declared)
    assert [declared[c] for c in ddf["label"].cat.codes.compute()] == LABELS
    dummies = dd.get_dummies(ddf["label"]).compute()
    assert list(dummies.columns) == declared
    assert dummies.sum().to_dict() == {"dog": 2, "bird": 4, "cat": 2}


def test_a_value_not_among_the_declared_categories_is_refused_by_name(
    tmp_path: Path, sessions: list[Any]
) -> None:
    """It would be NaN as the declared dtype: the partition fails naming the column, the value
    and its mini-batch (before, it was kept under categories the frame did not declare)."""
    ddf = _score(tmp_path, sessions, CATEGORIES, meta=_meta(["cat", "dog"]))
    assert ddf.partitions[0].compute()["label"].tolist() == LABELS[:4]
    with pytest.raises(daskscore.UsageError, match=r"'label' holds \['bird'\].*mini-batch 2"):
        ddf.partitions[1].compute()


OBJECTS = """
    import decimal
    import os

    import numpy as np
    import pandas as pd

    def run(mini_batch):
        n = [int(os.path.basename(p)[1:5]) for p in mini_batch]
        return pd.DataFrame(
            {
                "n": n,
                "price": [decimal.Decimal(i) / 4 for i in n],
                "tags": [{"n": i, "tag": "a"} for i in n],
                "embedding": [np.arange(3.0) + i for i in n],
                "mixed": [i if i % 2 else str(i) for i in n],
            }
        )
"""


@pytest.mark.parametrize("given_meta", [False, True], ids=["inferred", "meta"])
def test_object_columns_to_parquet_cannot_write_are_named_with_the_way_to(
    tmp_path: Path, sessions: list[Any], caplog: pytest.LogCaptureFixture, given_meta: bool
) -> None:
    """One warning names them and says how to write them (before, nothing did, and
    ``ddf.to_parquet(path)`` failed with an ``ArrowInvalid`` about an ``<object object>``); the
    way it gives writes the values ``run()`` returned."""
    meta = None
    if given_meta:
        columns = ("price", "tags", "embedding", "mixed")
        meta = pd.DataFrame({"n": pd.Series(dtype="int64")})
        meta = meta.assign(**{c: pd.Series(dtype=object) for c in columns})
    with caplog.at_level(logging.WARNING, logger="daskscore"):
        ddf = _score(tmp_path, sessions, OBJECTS, meta=meta)
    said = [r.getMessage() for r in caplog.records if "to_parquet" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert "column(s) 'price', 'tags', 'embedding', 'mixed' are declared object" in said[0]
    assert "ddf.to_parquet(path, schema=None)" in said[0]
    if not given_meta:  # (the values of mini-batch 0 tell which no schema writes)
        assert "Column(s) 'mixed' hold values of no one Arrow type" in said[0]
    out = tmp_path / "out"
    ddf.drop(columns="mixed").to_parquet(out, schema=None)
    back = pd.read_parquet(out).sort_values("n")
    assert back["price"].tolist() == [decimal.Decimal(i) / 4 for i in range(N_FILES)]
    assert back["tags"].tolist() == [{"n": i, "tag": "a"} for i in range(N_FILES)]
    for i, embedding in enumerate(back["embedding"]):
        np.testing.assert_array_equal(embedding, np.arange(3.0) + i)
