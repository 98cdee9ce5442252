"""The warm key: what a job's script ``init()`` depends on, hashed (no cluster)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from daskscore.engine.reuse import init_key
from daskscore.protocol import WorkerJob


def _job(root: Path, **changes) -> WorkerJob:
    code, model = root / "code", root / "model"
    if not code.exists():
        code.mkdir(parents=True)
        (code / "score.py").write_text("def run(b):\n    return b\n")
        (code / "__pycache__").mkdir()
        model.mkdir()
        (model / "w.pt").write_bytes(b"weights")
    job = WorkerJob(
        job_id="a",
        code=str(code),
        script=str(code / "score.py"),
        model_path=str(model),
        output=str(root / "out"),
        logs=str(root / "out" / "logs"),
        staging=str(root / "out" / ".daskscore"),
        env={"A": "1"},
    )
    return replace(job, **changes)


def test_the_key_ignores_what_each_job_has_of_its_own(tmp_path):
    key = init_key(_job(tmp_path))
    other = _job(
        tmp_path,
        job_id="b",
        logs=str(tmp_path / "o2" / "logs"),
        staging=str(tmp_path / "o2" / "s"),
        output_format="parquet",
        timeout=5.0,
        max_retries=0,
    )
    assert init_key(other) == key
    (tmp_path / "code" / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"x")
    assert init_key(_job(tmp_path)) == key, "caches are not the code"


def test_the_key_changes_with_what_init_depends_on(tmp_path):
    key = init_key(_job(tmp_path))
    assert init_key(_job(tmp_path, env={"A": "2"})) != key
    assert init_key(_job(tmp_path, logging_level="debug")) != key
    assert init_key(_job(tmp_path, intra_op_threads=2)) != key
    assert init_key(_job(tmp_path, gpu_ids=("0",))) != key
    assert init_key(_job(tmp_path, resources={"GPU": 1.0})) != key
    # the output folder: init() may keep AZUREML_BI_OUTPUT_PATH; a shipped job's is its own
    assert init_key(_job(tmp_path, output=str(tmp_path / "o2"))) != key
    shipped = init_key(_job(tmp_path, shipped=True))
    assert init_key(_job(tmp_path, shipped=True, job_id="b")) != shipped
    assert init_key(_job(tmp_path, model_path=None, model_url="s3://b/m")) != key
    (tmp_path / "code" / "score.py").write_text("def run(b):\n    return b  # changed\n")
    assert init_key(_job(tmp_path)) != key
    changed = init_key(_job(tmp_path))
    weights = tmp_path / "model" / "w.pt"
    os.utime(weights, ns=(1, 1))
    assert init_key(_job(tmp_path)) != changed, "a rewritten model file initialises again"


@pytest.mark.timeout(60)  # (before: the key waited forever for a writer on the pipe)
def test_the_key_of_code_holding_a_named_pipe_is_made_without_opening_it(tmp_path):
    """A named pipe in the code folder (a job on a shared disk runs with it) counts as a file
    that cannot be read: the key is made, and the same each time."""
    key = init_key(_job(tmp_path))
    os.mkfifo(tmp_path / "code" / "pipe")
    with_pipe = init_key(_job(tmp_path))
    assert with_pipe != key and init_key(_job(tmp_path)) == with_pipe
