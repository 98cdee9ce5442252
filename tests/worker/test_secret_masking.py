"""Secret values never reach what a job writes, in any form (issue 17, item 5).

The job runs the real command with ``--verbose`` (the driver's stderr log handler is inherited
by the forked workers).  Its scoring script prints a secret, logs it (``%s``, ``%r``, JSON) and
raises ``KeyError(secret)``, whose message is the secret's ``repr()``; the value holds ``"``,
``<``, ``&``, ``\\``, ``'`` and ``>``, so that repr(), JSON, HTML and CSV each write it
differently.  No text of the job (stderr, stdout, every file of the output folder) may hold
either end of the value.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import run_cli
from helpers import cli, cli_args, make_job, show, summary_of

import daskscore
from daskscore.cluster.local import local_cluster
from daskscore.config import secret_values
from daskscore.worker.environment import mask_handlers

SECRET = "Kx7Qm\"<&\\'>pQ3vZ"
FRAGMENTS = ("Kx7Qm", "pQ3vZ")

SCRIPT = """
    import json
    import logging
    import os

    log = logging.getLogger("score")

    def init():
        pass

    def run(mini_batch):
        secret = os.environ["DB_PASSWORD"]
        print("connecting with", secret)
        logging.warning("connecting with %s", secret)
        log.error("as repr %r, as JSON %s", secret, json.dumps({"password": secret}))
        raise KeyError(secret)
"""


def leaks(text: str) -> list[str]:
    return [f for f in FRAGMENTS if f in text]


def test_no_form_of_a_secret_reaches_any_output_with_verbose(tmp_path: Path) -> None:
    dep, inputs, out = make_job(
        tmp_path,
        SCRIPT,
        n_files=2,
        settings={"mini_batch_size": 1, "retry_settings": {"max_retries": 0}},
        env={"DB_PASSWORD": SECRET},
    )

    proc = cli(dep, inputs, out, "--verbose")

    assert summary_of(out)["failed_items"] == 2, show(proc)
    assert not leaks(proc.stderr), show(proc)
    assert not leaks(proc.stdout), show(proc)
    assert "KeyError: '***'" in proc.stderr, show(proc)  # masked, not dropped
    texts = {
        path.relative_to(out).as_posix(): path.read_text(encoding="utf-8", errors="replace")
        for path in out.rglob("*")
        if path.is_file()
    }
    for name, text in texts.items():
        assert not leaks(text), f"{name} holds the secret:\n{text}"
    masked = "KeyError: '***'"
    assert masked in texts["logs/job_error.txt"]
    assert masked in texts["logs/sys/job_report/processed_mini-batches.csv"]
    assert masked in texts["job_summary.json"]
    assert "KeyError: &#x27;***&#x27;" in texts["report.html"]
    errors = [t for n, t in texts.items() if n.startswith("logs/user/error/")]
    assert errors and all(masked in t for t in errors)
    prints = "".join(t for n, t in texts.items() if n.startswith("logs/user/stdout/"))
    assert "connecting with ***" in prints
    assert 'as repr \'***\', as JSON {"password": "***"}' in prints


def test_a_log_record_is_masked_by_a_filter_on_a_handler() -> None:
    logger = logging.getLogger("test-secret-masking")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    undo = mask_handlers(logger, secret_values({"DB_PASSWORD": SECRET}))
    try:
        logger.warning("connecting with %s and %r", SECRET, SECRET)
        try:
            raise KeyError(SECRET)
        except KeyError:
            logger.exception("failed")
    finally:
        undo()
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "connecting with *** and '***'" in written
    assert "KeyError: '***'" in written
    assert not leaks(written), written
    assert not handler.filters  # taken off again


# --------------------------------------------------------------------------- storage variables

#: The storage credentials of the shell that runs the job: each secret, in clear, is one of
#: STORAGE_SECRETS (a connection string's key, the secret of DASKSCORE_STORAGE_OPTIONS).
STORAGE = {
    "AWS_SECRET_ACCESS_KEY": "AWSSECRETvalue12345",
    "AZURE_STORAGE_CONNECTION_STRING": (
        "DefaultEndpointsProtocol=https;AccountName=acct;"
        "AccountKey=AZKEYsecretvalue999==;EndpointSuffix=core.windows.net"
    ),
    "DASKSCORE_STORAGE_OPTIONS": json.dumps({"s3": {"secret": "OPTSECRETvalue777"}}),
}
STORAGE_SECRETS = ("AWSSECRETvalue12345", "AZKEYsecretvalue999", "OPTSECRETvalue777")

STORAGE_SCRIPT = """
    import os

    NAMES = ("AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING",
             "DASKSCORE_STORAGE_OPTIONS", "AWS_SESSION_TOKEN")

    def init():
        print({name: os.environ.get(name) for name in NAMES}, flush=True)

    def run(mini_batch):
        raise RuntimeError(
            "could not connect with " + os.environ["AZURE_STORAGE_CONNECTION_STRING"]
            + " and " + os.environ["AWS_SECRET_ACCESS_KEY"]
        )
"""


def storage_leaks(texts: dict[str, str]) -> dict[str, list[str]]:
    """The texts (by name) that hold a storage secret in clear, and which."""
    found = {name: [s for s in STORAGE_SECRETS if s in text] for name, text in texts.items()}
    return {name: which for name, which in found.items() if which}


def files_of(out: Path) -> dict[str, str]:
    return {
        path.relative_to(out).as_posix(): path.read_text(encoding="utf-8", errors="replace")
        for path in out.rglob("*")
        if path.is_file()
    }


def test_the_shells_storage_secrets_are_masked_on_the_embedded_cluster(tmp_path: Path) -> None:
    dep, inputs, out = make_job(
        tmp_path,
        STORAGE_SCRIPT,
        n_files=2,
        settings={"mini_batch_size": 1, "retry_settings": {"max_retries": 0}},
    )

    proc = run_cli(*cli_args(dep, inputs, out, "--verbose"), env=STORAGE)

    assert summary_of(out)["failed_items"] == 2, show(proc)
    texts = {**files_of(out), "<stderr>": proc.stderr, "<stdout>": proc.stdout}
    assert not storage_leaks(texts), storage_leaks(texts)
    assert "could not connect with *** and ***" in texts["logs/job_error.txt"]
    assert "could not connect with *** and ***" in texts["failed_items.csv"]
    prints = "".join(t for n, t in texts.items() if n.startswith("logs/user/stdout/"))
    assert "'AWS_SECRET_ACCESS_KEY': '***'" in prints, prints
    assert '"secret": "***"' in prints, prints


@pytest.fixture(scope="module")
def storage_cluster() -> Iterator[Any]:
    """A cluster of the caller's (as a ``--scheduler`` one), whose workers were started with
    STORAGE in their environment; this process has it too while the module's tests run."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in STORAGE.items():
            patch.setenv(name, value)
        patch.delenv("AWS_SESSION_TOKEN", raising=False)
        with local_cluster(1, dashboard=False) as handle:
            yield handle.client


def test_storage_secrets_are_masked_on_a_callers_cluster_and_in_score(
    storage_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers' own storage secrets are masked; the driver's variables are not set on
    them (a variable only the driver has stays unset there)."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "driver-only-token-42")
    dep, inputs, out = make_job(
        tmp_path,
        STORAGE_SCRIPT,
        n_files=2,
        settings={"mini_batch_size": 1, "retry_settings": {"max_retries": 0}},
    )
    result = daskscore.run(dep, inputs, out, client=storage_cluster, progress=False)
    meta = pd.DataFrame({"x": pd.Series(dtype="object")})
    session = daskscore.open_session(
        dep, inputs, client=storage_cluster, meta=meta, on_error="drop"
    )
    try:
        session.frame.compute()
        report = session.report()
    finally:
        session.close()

    assert result.summary["failed_items"] == 2
    texts = files_of(out)
    errors = {f"score() failure {i}": f["error"] for i, f in enumerate(report["failures"])}
    assert errors and not storage_leaks({**texts, **errors}), storage_leaks({**texts, **errors})
    assert all("could not connect with *** and ***" in e for e in errors.values()), errors
    prints = "".join(t for n, t in texts.items() if n.startswith("logs/user/stdout/"))
    assert "'AWS_SECRET_ACCESS_KEY': '***'" in prints, prints
    assert "'AWS_SESSION_TOKEN': None" in prints, prints  # (masked, never set on the workers)


def test_the_drivers_failed_items_mask_its_own_storage_secrets(
    storage_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """failed_items.csv is masked again by the driver, with the driver's storage secrets
    too: here a token the workers do not have, which reaches run()'s error through the
    input file it reads."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "driver-only-token-42")
    dep, inputs, out = make_job(
        tmp_path,
        "def run(mini_batch):\n    raise ValueError('token ' + open(mini_batch[0]).read())\n",
        n_files=1,
        settings={"retry_settings": {"max_retries": 0}},
    )
    (inputs / "f0000.csv").write_text("driver-only-token-42")

    daskscore.run(dep, inputs, out, client=storage_cluster, progress=False)

    text = (out / "failed_items.csv").read_text(encoding="utf-8")
    assert "ValueError: token ***" in text and "driver-only-token-42" not in text, text
