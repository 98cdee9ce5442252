"""Jobs whose input and output live in object storage: Azurite (az://) and moto (s3://),
real emulator processes on loopback.  The scoring script still gets local file paths, and
what it writes to AZUREML_BI_OUTPUT_PATH reaches the remote output."""

from __future__ import annotations

from typing import Any

import fsspec
import pandas as pd
import pytest
from conftest import write_deployment
from storage_emulators import make_bucket, make_container

import daskscore
from daskscore.cluster.local import local_cluster

pytestmark = pytest.mark.slow

SCRIPT = """
    import os
    import pandas as pd

    def init():
        pass

    def run(mini_batch):
        out_dir = os.environ["AZUREML_BI_OUTPUT_PATH"]
        rows = []
        for path in mini_batch:
            assert os.path.isfile(path), path          # a local copy, as in Azure
            df = pd.read_csv(path)
            stem = os.path.splitext(os.path.basename(path))[0]
            df.assign(doubled=df["x"] * 2).to_parquet(os.path.join(out_dir, stem + ".parquet"))
            rows.append(f"{os.path.basename(path)} {df['x'].sum()}")
        return rows
"""


@pytest.fixture(params=["az", "s3"])
def bucket(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "az":
        info = request.getfixturevalue("azurite")
        return {"root": make_container(info), "options": info["storage_options"]}
    info = request.getfixturevalue("moto_s3")
    return {"root": make_bucket(info), "options": info["storage_options"]}


@pytest.fixture(scope="module")
def remote_client(azurite, moto_s3):
    """A cluster started after both emulators exported their credentials."""
    with local_cluster(2, dashboard=False) as handle:
        yield handle.client


def _upload_inputs(root: str, options: dict[str, Any], n: int) -> None:
    fs, base = fsspec.core.url_to_fs(root, **options)
    fs.pipe({f"{base}/in/part{i % 3}/f{i:03d}.csv": f"x\n{i}\n{i}\n".encode() for i in range(n)})
    fs.pipe({f"{base}/in/.hidden.csv": b"x\n999\n"})
    fs.invalidate_cache()


def test_remote_input_and_output(bucket, remote_client, tmp_path) -> None:
    root, options = bucket["root"], bucket["options"]
    _upload_inputs(root, options, 23)
    dep = write_deployment(tmp_path / "d", SCRIPT, settings={"mini_batch_size": 4})
    result = daskscore.run(dep, f"{root}/in", f"{root}/out", client=remote_client)
    assert result.status == "Completed"
    assert result.succeeded_items == 23  # the dot-file is skipped
    fs, base = fsspec.core.url_to_fs(root, **options)
    fs.invalidate_cache()
    with fs.open(f"{base}/out/predictions.csv", "rb") as fh:
        preds = pd.read_csv(fh, sep=" ", header=None)
    # sorted by full path: part0/f000, part0/f003, ..., part1/..., part2/...
    expected = sorted(range(23), key=lambda i: (i % 3, i))
    assert preds[1].tolist() == [2 * i for i in expected]
    assert fs.exists(f"{base}/out/job_summary.json")
    assert fs.exists(f"{base}/out/logs/sys/job_report/processed_mini-batches.csv")
    parquet = sorted(p for p in fs.find(f"{base}/out") if p.endswith(".parquet"))
    assert len(parquet) == 23
    with fs.open(parquet[0], "rb") as fh:
        assert pd.read_parquet(fh)["doubled"].tolist() == [0, 0]
    assert not any("/.daskscore/" in p for p in fs.find(f"{base}/out"))


def test_remote_output_is_refused_then_overwritten(bucket, remote_client, tmp_path) -> None:
    root, options = bucket["root"], bucket["options"]
    _upload_inputs(root, options, 5)
    dep = write_deployment(tmp_path / "d", SCRIPT)
    daskscore.run(dep, f"{root}/in", f"{root}/out", client=remote_client)
    with pytest.raises(daskscore.OutputError, match="--overwrite"):
        daskscore.run(dep, f"{root}/in", f"{root}/out", client=remote_client)
    again = daskscore.run(dep, f"{root}/in", f"{root}/out", client=remote_client, overwrite=True)
    assert again.status == "Completed"
    assert again.predictions == f"{root}/out/predictions.csv"


def test_missing_remote_input_is_a_clear_error(bucket, remote_client, tmp_path) -> None:
    dep = write_deployment(tmp_path / "d", SCRIPT)
    with pytest.raises(daskscore.InputError, match="does not exist"):
        daskscore.run(dep, f"{bucket['root']}/nothing-here", tmp_path / "out", client=remote_client)
