"""The dtypes a ``daskscore.score()`` frame declares are those Dask can trust downstream.

A categorical column was declared with mini-batch 0's categories as known ones: Dask's
``cat.codes`` gave the code of ``'cat'`` to a later partition's ``'bird'`` rows, and
``dd.get_dummies`` left that partition NaN, without a word.
Real worker processes: the module's LocalCluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.dataframe as dd
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
