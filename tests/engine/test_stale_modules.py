"""A code folder changed while an older install of it is still alive in the worker processes
(a ``score()`` session never closed): the new install imports the folder's current modules,
not the older install's, and the older one keeps its own until it closes.

Real worker processes (the module's LocalCluster of two), real files edited between jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import write_deployment, write_inputs

import daskscore

SCRIPT = """
    import helper

    def init():
        pass

    def run(mini_batch):
        return [PREFIX + helper.NAME for _ in mini_batch]

    PREFIX = {prefix!r}
"""


def _write(root: Path, prefix: str, name: str) -> Path:
    """The deployment, its score.py (run() returns PREFIX + helper.NAME) and helper.py."""
    return write_deployment(
        root,
        SCRIPT.format(prefix=prefix),
        extra_code={"helper.py": f"NAME = {name!r}\n"},
        settings={"mini_batch_size": 3},
    )


def _values(frame: Any, client: Any) -> set[str]:
    rows = client.compute(frame).result()
    return set(rows.iloc[:, 0].astype(str))


def test_a_changed_code_folder_imports_its_own_sibling_modules_while_an_older_install_lives(
    client: Any, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in", 12)
    dep = _write(tmp_path / "h2", "", "helper-B")
    first = daskscore.score(dep, inputs, client=client)  # its session is left open
    assert _values(first, client) == {"helper-B"}

    _write(tmp_path / "h2", "v2-", "helper-v2")  # score.py and helper.py both edited
    second = daskscore.score(dep, inputs, client=client)
    assert _values(second, client) == {"v2-helper-v2"}  # (was v2-helper-B: the old helper)

    result = daskscore.run(dep, inputs, tmp_path / "out", overwrite=True, client=client)
    rows = set(result.predictions.read_text().split())
    assert rows == {"v2-helper-v2"}, rows

    # the older install, still open, keeps the helper it imported
    assert _values(first, client) == {"helper-B"}
