"""Jobs whose input and output live in object storage: Azurite (az://) and moto (s3://),
real emulator processes on loopback.  The scoring script still gets local file paths, and
what it writes to AZUREML_BI_OUTPUT_PATH reaches the remote output."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pytest
from conftest import write_deployment
from faultproxy import HOST, FaultProxy, Rule
from storage_emulators import clear_fsspec_instances, make_bucket, make_container

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


def test_a_signed_http_url_is_refused_unseen(azurite, remote_client, tmp_path) -> None:
    """An Azure SAS URL as the input: refused (exit 2), naming the URL without its query,
    saying how to give the token; its signature is in no file of the output folder (it was
    scored: the signature in job_summary.json, the job's recipe and report.html, and run()
    got a file named ``f01.txt?se=...&sig=...``)."""
    import datetime
    from urllib.parse import parse_qs

    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    container = make_container(azurite)[len("az://") :]
    fs, _ = fsspec.core.url_to_fs(f"az://{container}", **azurite["storage_options"])
    fs.pipe(f"{container}/f01.csv", b"x\n1\n")
    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    sas = generate_blob_sas(
        azurite["account_name"],
        container,
        "f01.csv",
        account_key=azurite["account_key"],
        permission=BlobSasPermissions(read=True),
        expiry=expiry,
    )
    url = f"{azurite['blob_endpoint']}/{container}/f01.csv?{sas}"
    sig = parse_qs(sas)["sig"][0]
    dep = write_deployment(tmp_path / "d", SCRIPT)
    out = tmp_path / "out"
    with pytest.raises(daskscore.UsageError) as refused:
        daskscore.run(dep, url, out, client=remote_client)
    text = str(refused.value)
    shown = url.split("?")[0] + "?…"
    assert text.startswith(f"reading '{shown}': an http(s) URL with a query string"), text
    assert "AZURE_STORAGE_SAS_TOKEN" in text and sig not in text and sas not in text, text
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not [p for p in written if sig.encode() in p.read_bytes()], written


FAILING_SCRIPT = """
    import os

    def init():
        pass

    def run(mini_batch):
        names = [os.path.basename(p) for p in mini_batch]
        if "f001.csv" in names and os.environ.get("FAIL_ONE") == "1":
            raise ValueError("f001 is bad")
        return names
"""


def test_remote_overwrite_removes_what_a_local_one_does(bucket, remote_client, tmp_path) -> None:
    """An --overwrite into a URL removes the earlier job's failed_items.csv, report, logs and
    predictions of another name, as in a local folder; files the user put there stay (one
    under logs/ too: the whole logs/ folder was removed)."""
    root, options = bucket["root"], bucket["options"]
    _upload_inputs(root, options, 3)
    fs, base = fsspec.core.url_to_fs(root, **options)
    fs.pipe({f"{base}/out/notes/mine.txt": b"the user's own"})
    fs.pipe({f"{base}/out/logs/app.log": b"the user's log"})
    settings = {"mini_batch_size": 1, "error_threshold": -1, "output_file_name": "first.csv"}
    env = {"environment_variables": {"FAIL_ONE": "1"}}
    first = write_deployment(
        tmp_path / "d1",
        FAILING_SCRIPT,
        settings={**settings, **env, "retry_settings": {"max_retries": 0}},
    )
    daskscore.run(first, f"{root}/in/part1", f"{root}/out", client=remote_client)
    fs.invalidate_cache()
    before = {p.rsplit("/out/", 1)[1] for p in fs.find(f"{base}/out")}
    assert {"failed_items.csv", "first.csv", "report.html", "job_summary.json"} <= before
    second = write_deployment(tmp_path / "d2", FAILING_SCRIPT, settings={"mini_batch_size": 1})
    result = daskscore.run(
        second, f"{root}/in/part1", f"{root}/out", client=remote_client, overwrite=True
    )
    assert result.status == "Completed" and result.failed_items == 0
    fs.invalidate_cache()
    after = {p.rsplit("/out/", 1)[1] for p in fs.find(f"{base}/out")}
    assert "failed_items.csv" not in after, sorted(after)
    assert "first.csv" not in after, sorted(after)
    assert {"predictions.csv", "job_summary.json", "notes/mine.txt", "logs/app.log"} <= after
    assert fs.cat_file(f"{base}/out/notes/mine.txt") == b"the user's own"
    assert fs.cat_file(f"{base}/out/logs/app.log") == b"the user's log"
    # the logs are the second job's only: its first mini-batch's error is not there
    errors = [p for p in after if p.startswith("logs/user/error/")]
    assert not any(b"f001 is bad" in fs.cat_file(f"{base}/out/{p}") for p in errors)


WRONG_KEY = "V3JvbmdLZXlTdXBlclNlY3JldA=="


def _without_credentials(bucket: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """No S3 credentials at all, or a wrong Azure account key."""
    if bucket["root"].startswith("s3://"):
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    else:
        conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
        good = conn.split("AccountKey=")[1].split(";")[0]
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn.replace(good, WRONG_KEY))
    clear_fsspec_instances("s3", "az", "abfs")


def test_storage_credentials_refused_name_the_url(
    bucket, remote_client, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing or wrong credentials: one paragraph naming the input or output URL, saying it
    is about credentials, no secret in it (an internal error before)."""
    dep = write_deployment(tmp_path / "d", SCRIPT)
    _upload_inputs(bucket["root"], bucket["options"], 2)
    local_in = tmp_path / "in"
    local_in.mkdir()
    (local_in / "a.csv").write_text("x\n1\n")
    _without_credentials(bucket, monkeypatch)
    url = f"{bucket['root']}/in"
    with pytest.raises(daskscore.InputError) as got:
        daskscore.run(dep, url, tmp_path / "out", client=remote_client)
    text = str(got.value)
    assert f"input '{url}'" in text and "credentials" in text and WRONG_KEY not in text
    out = f"{bucket['root']}/out"
    with pytest.raises(daskscore.OutputError) as got:
        daskscore.run(dep, local_in, out, client=remote_client)
    text = str(got.value)
    assert f"output '{out}'" in text and "credentials" in text and WRONG_KEY not in text
    clear_fsspec_instances("s3", "az", "abfs")


def test_an_input_gone_before_its_download_is_named(bucket, tmp_path) -> None:
    """An object removed (or refused) between the listing and its mini-batch's download: the
    error names it and says run() was not called (it was the backend's bare
    ``FileNotFoundError: The specified key does not exist.`` with an s3fs traceback)."""
    from daskscore.io import storage

    root, options = bucket["root"], bucket["options"]
    _upload_inputs(root, options, 3)
    urls = [f"{root}/in/part{i % 3}/f{i:03d}.csv" for i in range(3)]
    fs, base = fsspec.core.url_to_fs(root, **options)
    fs.rm(f"{base}/in/part1/f001.csv")
    fs.invalidate_cache()
    clear_fsspec_instances()
    with pytest.raises(daskscore.InputError) as raised:
        storage.download(urls, tmp_path / "dl", options)
    text = str(raised.value)
    assert f"'{urls[1]}'" in text and "could not be downloaded" in text, text
    assert "run() was not called" in text and urls[0] not in text, text


def test_a_batched_download_that_stopped_early_names_the_object_gone(bucket, tmp_path) -> None:
    """A batched get whose error names no key, stopped before any file landed (seen under
    load): the input named is the one the store no longer has, not the mini-batch's first."""
    from daskscore.io import storeaccess

    root, options = bucket["root"], bucket["options"]
    _upload_inputs(root, options, 3)
    urls = [f"{root}/in/part{i % 3}/f{i:03d}.csv" for i in range(3)]
    fs, base = fsspec.core.url_to_fs(root, **options)
    remote = [fs._strip_protocol(u) for u in urls]
    fs.rm(remote[1])
    local = [str(tmp_path / f"f{i}.csv") for i in range(3)]  # (none of them fetched)
    exc = FileNotFoundError("The specified key does not exist.")
    text = str(storeaccess.download_failed(exc, urls, remote, local, fs))
    assert text.startswith(f"input '{urls[1]}' could not be downloaded"), text


def _through(proxy: FaultProxy, bucket: dict[str, Any]) -> dict[str, Any]:
    """``bucket``'s storage options, its emulator reached through ``proxy``."""
    options = dict(bucket["options"])
    if bucket["root"].startswith("az://"):
        port = options["connection_string"].split("BlobEndpoint=http://")[1].split("/")[0]
        options["connection_string"] = options["connection_string"].replace(
            port, f"{HOST}:{proxy.port}"
        )
    else:
        options["client_kwargs"] = {**options["client_kwargs"], "endpoint_url": proxy.url}
    return options


def _emulator_port(bucket: dict[str, Any]) -> int:
    options = bucket["options"]
    if bucket["root"].startswith("az://"):
        return int(options["connection_string"].split(f"http://{HOST}:")[1].split("/")[0])
    return int(options["client_kwargs"]["endpoint_url"].rsplit(":", 1)[1])


def test_a_download_cut_short_is_named(bucket, tmp_path) -> None:
    """A download whose answer is cut short every time: an InputError naming that object (it
    was aiohttp's bare ``ClientPayloadError`` traceback from s3fs, naming no URL); the others
    of the mini-batch, fetched whole, are not named."""
    from daskscore.io import storage

    root = bucket["root"]
    _upload_inputs(root, bucket["options"], 3)
    urls = [f"{root}/in/part{i % 3}/f{i:03d}.csv" for i in range(3)]
    fs, base = fsspec.core.url_to_fs(root, **bucket["options"])
    fs.pipe(f"{base}/in/part1/f001.csv", b"x\n" + b"1\n" * 50_000)  # (s3fs reads the rest
    # of a body cut short again, a few times: half of the rest each time, here)
    with FaultProxy(_emulator_port(bucket)) as proxy:
        proxy.rules = [Rule("GET", r"/in/part1/f001\.csv", "truncate")]
        clear_fsspec_instances("s3", "az")
        try:
            with pytest.raises(daskscore.InputError) as raised:
                storage.download(urls, tmp_path / "dl", _through(proxy, bucket))
        finally:
            clear_fsspec_instances("s3", "az")
    text = str(raised.value)
    assert text.startswith(f"input '{urls[1]}' could not be downloaded ("), text
    assert "run() was not called" in text, text


NAMES_SCRIPT = """
    import os

    def init():
        pass

    def run(mini_batch):
        return [os.path.basename(p) for p in mini_batch]
"""


def test_a_download_that_never_ends_fails_its_try_within_the_timeout(
    moto_s3, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object whose GET the storage never answers: each try of its mini-batch fails with an
    InputError saying its input was not downloaded within retry_settings.timeout, and the job
    ends (it ran on: botocore's read timeout and retries, s3fs's retries, times the job's
    tries); the other mini-batches are scored, each once."""
    root = make_bucket(moto_s3)
    _upload_inputs(root, moto_s3["storage_options"], 9)  # (in/part1: f001, f004, f007)
    settings = {"mini_batch_size": 1, "retry_settings": {"max_retries": 1, "timeout": 5}}
    dep = write_deployment(tmp_path / "d", NAMES_SCRIPT, settings=settings)
    out = tmp_path / "out"
    with FaultProxy(moto_s3["port"]) as proxy:
        proxy.rules = [Rule("GET", r"/in/part1/f001\.csv", "stall")]
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # (the job's workers: through it)
        clear_fsspec_instances("s3")
        try:
            result = daskscore.run(dep, f"{root}/in/part1", out, workers=1, prefetch=2)
        finally:
            clear_fsspec_instances("s3")
    assert result.status == "Completed" and result.failed_items == 1, result
    failed = result.failed_items_frame()
    assert failed["file"].tolist() == [f"{root}/in/part1/f001.csv"], failed
    assert failed["tries"].tolist() == [2], failed
    error = failed["error"].iloc[0]
    assert error.startswith(
        f"InputError: its input '{root}/in/part1/f001.csv' was not downloaded within the "
        "timeout (5 s, retry_settings.timeout)"
    ), error
    rows = Path(result.predictions).read_text().split()
    assert sorted(rows) == ["f004.csv", "f007.csv"], rows
    stalled = [seen for seen in proxy.seen if seen[2] == "stall"]
    assert len(stalled) >= 2, proxy.seen  # (one per try at least)
