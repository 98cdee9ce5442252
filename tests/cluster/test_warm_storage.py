"""A warm cluster's workers read a job's URLs with the job's storage credentials.

The cluster is started from a shell without any (no ``AWS_*`` keys, no endpoint); the jobs
run from shells that have them, for moto's S3 server (a real process on loopback): one in
``AWS_*`` variables, one in ``DASKSCORE_STORAGE_OPTIONS`` alone.  Both read an ``s3://``
input on the warm workers, and the secrets the script prints are masked in the job's logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
from conftest import REPO, write_deployment
from helpers import show, summary_of
from storage_emulators import make_bucket

pytestmark = pytest.mark.slow

KEY, SECRET = "AKIAWARMJOBKEY0001", "warm-job-secret-value-9"
OPTIONS_SECRET = "options-secret-value-7"

SCRIPT = """
    import os

    def init():
        pass

    def run(mini_batch):
        # what a careless script prints: masked in the job's logs
        print("secret:", os.environ.get("AWS_SECRET_ACCESS_KEY"))
        print("options:", os.environ.get("DASKSCORE_STORAGE_OPTIONS"))
        return [os.path.basename(p) + " " + open(p).read().strip() for p in mini_batch]
"""


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment less every storage variable, plus ``extra``; no AWS
    configuration file of the developer's is read."""
    storage = ("AWS_", "AZURE_", "GOOGLE_", "GCSFS_", "DASKSCORE_STORAGE_OPTIONS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(storage)}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daskscore", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )


def test_warm_workers_use_the_jobs_storage_credentials(moto_s3, tmp_path, warm_env) -> None:
    bucket = make_bucket(moto_s3)
    fs, base = fsspec.core.url_to_fs(bucket, **moto_s3["storage_options"])
    fs.pipe({f"{base}/in/f{i}.txt": f"{i}".encode() for i in range(4)})
    fs.invalidate_cache()
    dep = write_deployment(tmp_path / "d", SCRIPT, settings={"mini_batch_size": 2})
    started = _cli("cluster", "start", "--workers", "1", env=_clean_env(**warm_env))
    assert started.returncode == 0, show(started)
    endpoint = moto_s3["endpoint_url"]
    in_variables = _clean_env(
        **warm_env,
        AWS_ACCESS_KEY_ID=KEY,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_ENDPOINT_URL=endpoint,
    )
    options = {"s3": {"key": KEY, "secret": OPTIONS_SECRET, "endpoint_url": endpoint}}
    in_options = _clean_env(**warm_env, DASKSCORE_STORAGE_OPTIONS=json.dumps(options))
    for name, env in (("variables", in_variables), ("options", in_options)):
        out = tmp_path / name
        args = ("run", str(dep), "--input", f"{bucket}/in", "--output", str(out))
        proc = _cli(*args, "--no-progress", "--no-dashboard", env=env)
        assert proc.returncode == 0, show(proc)
        assert "warm" in proc.stderr, show(proc)  # (it ran on the warm cluster)
        summary = summary_of(out)
        assert summary["succeeded_items"] == 4 and summary["failed_items"] == 0, summary
        lines = (out / "predictions.csv").read_text().splitlines()
        assert lines == [f"f{i}.txt {i}" for i in range(4)], name
        for path in out.rglob("*"):  # the secrets the script printed are masked
            if path.is_file():
                text = path.read_text(errors="replace")
                assert SECRET not in text and OPTIONS_SECRET not in text, path
        printed = "".join(p.read_text() for p in (out / "logs" / "user" / "stdout").glob("*"))
        assert "secret: ***" in printed or name == "options", printed
    state = Path(warm_env["DASKSCORE_CLUSTER_STATE"]).parent
    for path in state.rglob("*"):  # nor does the cluster's own log show them
        if path.is_file():
            text = path.read_text(errors="replace")
            assert SECRET not in text and OPTIONS_SECRET not in text, path
