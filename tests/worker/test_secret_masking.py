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
import logging
from pathlib import Path

from helpers import cli, make_job, show, summary_of

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
