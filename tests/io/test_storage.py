"""daskscore.io.storage against the real emulators (Azurite for az://, moto for s3://), plus the
parts that need no emulator (URL parsing, options from the environment, error messages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pytest
from faultproxy import FaultProxy, Rule
from storage_emulators import (
    clear_fsspec_instances,
    free_port,
    make_bucket,
    make_container,
    unique_name,
)

from daskscore.errors import InputError, UsageError
from daskscore.io.storage import (
    backend_modules,
    download,
    filesystem,
    is_remote,
    list_files,
    local_names,
    open_output,
    storage_options_from_env,
    upload_tree,
)

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- no emulator needed


@pytest.mark.parametrize(
    ("path", "remote"),
    [
        ("az://c/x", True),
        ("abfs://c@acct.dfs.core.windows.net/x", True),
        ("s3://b/k", True),
        ("simplecache::s3://b/k", True),
        ("/data/in", False),
        ("data/in", False),
        ("file:///data/in", False),
        ("local://data", False),
        ("C:\\data\\in", False),
    ],
)
def test_is_remote(path: str, remote: bool) -> None:
    assert is_remote(path) is remote


@pytest.mark.parametrize(
    ("url", "module", "expected"),
    [
        ("az://c/x", "adlfs", "reading az:// needs adlfs: pip install 'daskscore[azure]'"),
        ("abfs://c/x", "adlfs", "reading abfs:// needs adlfs: pip install 'daskscore[azure]'"),
        ("s3://b/x", "s3fs", "reading s3:// needs s3fs: pip install 'daskscore[s3]'"),
        ("gs://b/x", "gcsfs", "reading gs:// needs gcsfs: pip install 'daskscore[gcs]'"),
    ],
)
def test_missing_backend_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, expected: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(UsageError) as info:
        filesystem(url)
    assert str(info.value) == expected
    assert isinstance(info.value.__cause__, ImportError)


def test_missing_backend_when_writing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(
        UsageError, match=r"^writing s3:// needs s3fs: pip install 'daskscore\[s3\]'"
    ):
        upload_tree(tmp_path, "s3://b/out")


def test_unknown_protocol_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="nosuchproto"):
        filesystem("nosuchproto://x/y")


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("s3://", "bucket"),
        ("s3:///in", "bucket"),
        ("az://", "container"),
        ("abfs://@account.dfs.core.windows.net/in", "container"),
        ("simplecache::s3://", "bucket"),
    ],
)
def test_a_url_without_bucket_or_container_is_a_usage_error(url: str, kind: str) -> None:
    """An input or output URL that names no bucket or container: a usage error naming it,
    before any backend is asked (``internal error: ValueError: Cannot traverse all of S3`` /
    ``Please specify a container name`` before)."""
    from daskscore.io.outputlock import lock_output

    with pytest.raises(UsageError, match=f"reading '{url}': the URL names no {kind}; write it"):
        list_files(url)
    with pytest.raises(UsageError, match=f"writing '{url}': the URL names no {kind}"):
        lock_output(url, "j1")


def test_storage_options_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASKSCORE_STORAGE_OPTIONS", raising=False)
    assert storage_options_from_env("az") == {}
    keyed = {"az": {"account_name": "a"}, "s3": {"anon": True}}
    monkeypatch.setenv("DASKSCORE_STORAGE_OPTIONS", json.dumps(keyed))
    assert storage_options_from_env("abfs") == {"account_name": "a"}
    assert storage_options_from_env("s3") == {"anon": True}
    assert storage_options_from_env("gs") == {}
    monkeypatch.setenv("DASKSCORE_STORAGE_OPTIONS", '{"anon": true}')
    assert storage_options_from_env("gs") == {"anon": True}
    assert storage_options_from_env("file") == {}
    monkeypatch.setenv("DASKSCORE_STORAGE_OPTIONS", "{not json")
    with pytest.raises(UsageError, match="DASKSCORE_STORAGE_OPTIONS is not valid JSON"):
        storage_options_from_env("s3")
    monkeypatch.setenv("DASKSCORE_STORAGE_OPTIONS", "[1]")
    with pytest.raises(UsageError, match="must be a JSON object"):
        storage_options_from_env("s3")


def test_endpoint_env_fallback_for_old_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("botocore")  # (s3fs's; the [s3] extra)
    monkeypatch.delenv("DASKSCORE_STORAGE_OPTIONS", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert storage_options_from_env("s3") == {}  # botocore >= 1.31 reads it itself
    monkeypatch.setattr("daskscore.io.storage._botocore_reads_endpoint_env", lambda: False)
    assert storage_options_from_env("s3") == {"endpoint_url": "http://127.0.0.1:9"}


def test_local_names_disambiguate_by_hash_folder() -> None:
    urls = ["s3://b/a/x.csv", "s3://b/b/x.csv", "s3://b/y.csv"]
    names = local_names(urls)
    assert names["s3://b/y.csv"] == "y.csv"
    first, second = names["s3://b/a/x.csv"], names["s3://b/b/x.csv"]
    assert first != second and first.endswith("/x.csv") and second.endswith("/x.csv")
    assert local_names(reversed(urls)) == names  # not order dependent


def test_local_paths(tmp_path: Path) -> None:
    src = tmp_path / "in"
    for rel in ("b.txt", "a/c.txt", ".hidden/d.txt", "a/.e.txt"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    assert list_files(str(src)) == [str(src / "a/c.txt"), str(src / "b.txt")]
    assert download([str(src / "b.txt")], tmp_path / "dl") == [str(src / "b.txt")]
    assert upload_tree(src, str(tmp_path / "out"), exclude=(".*",)) == 2
    out = tmp_path / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt")) == ["a/c.txt", "b.txt"]
    with pytest.raises(InputError, match="does not exist"):
        list_files(str(tmp_path / "nope"))


# ---------------------------------------------------------------- against the emulators


def test_an_unreachable_endpoint_is_named_not_blamed_on_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A storage endpoint nothing listens on (connection refused): the input and the output
    are said to be unreachable, naming the endpoint, not refused for their credentials.
    (s3:// only: Azure's client retries a refused connection for minutes first.)"""
    from daskscore.errors import OutputError
    from daskscore.io.outputdir import claim_remote_output

    pytest.importorskip("s3fs")
    endpoint = f"http://127.0.0.1:{free_port()}"  # (nothing listens there)
    for name, value in (("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    clear_fsspec_instances("s3")
    try:
        with pytest.raises(InputError) as read:
            list_files("s3://bucket/in")
        with pytest.raises(OutputError) as written:
            claim_remote_output("s3://bucket/out", "predictions.csv", False)
    finally:
        clear_fsspec_instances("s3")
    for what, got in (("input 's3://bucket/in'", read), ("output 's3://bucket/out'", written)):
        text = str(got.value)
        assert text.startswith(what) and f"storage endpoint {endpoint} cannot be reached" in text
        assert "credentials" not in text, text


def test_a_failing_service_is_named_not_blamed_on_credentials(
    moto_s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 answering 503 (SlowDown) to the input's listing, or 500 to the output's marker, or a
    bucket that does not exist: an InputError / OutputError naming the URL (they were
    ``internal error: OSError: [Errno 16] ...``, ``FileNotFoundError``: s3fs turns botocore's
    errors into plain OSErrors); a service failing is said so, not blamed on credentials."""
    from daskscore.errors import OutputError
    from daskscore.io.outputdir import claim_remote_output
    from daskscore.io.outputlock import lock_output

    root = make_bucket(moto_s3)
    _write(root, moto_s3["storage_options"], {"in/a.csv": b"a"})
    with FaultProxy(moto_s3["port"]) as proxy:
        proxy.rules = [
            Rule("GET", r"list-type=2.*prefix=in", "503"),
            Rule("PUT", r"/out/\.daskscore\.lock", "500"),
        ]
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        clear_fsspec_instances("s3")
        try:
            with pytest.raises(InputError) as read:
                list_files(f"{root}/in")
            lock = lock_output(f"{root}/out", "j1")
            with pytest.raises(OutputError) as written:
                claim_remote_output(f"{root}/out", "predictions.csv", False, lock.announce)
            missing = f"s3://{unique_name('missing')}/run1"  # (a bucket not made)
            lock = lock_output(missing, "j2")
            with pytest.raises(OutputError) as nobucket:
                claim_remote_output(missing, "predictions.csv", False, lock.announce)
        finally:
            clear_fsspec_instances("s3")
    for what, verb, status, got in (
        (f"input '{root}/in'", "read", 503, read),
        (f"output '{root}/out'", "written", 500, written),
    ):
        text = str(got.value)
        assert text.startswith(f"{what} cannot be {verb}: the storage service failed the request")
        assert f"(HTTP {status}, ClientError: " in text and "credentials found" not in text, text
    assert str(nobucket.value).startswith(f"output '{missing}' cannot be written"), nobucket.value


@pytest.fixture(params=["az", "s3"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A fresh, empty container (Azurite) or bucket (moto): ``root`` URL and ``options``."""
    if request.param == "az":
        info = request.getfixturevalue("azurite")
        root = make_container(info)
    else:
        info = request.getfixturevalue("moto_s3")
        root = make_bucket(info)
    return {"root": root, "options": info["storage_options"], "info": info}


def _write(root: str, options: dict[str, Any], files: dict[str, bytes]) -> None:
    """Write ``files`` (relative name -> content) under ``root`` with plain fsspec."""
    fs, base = fsspec.core.url_to_fs(root, **options)
    fs.pipe({f"{base}/{name}": data for name, data in files.items()})
    fs.invalidate_cache()


FILES = {
    "in/b.csv": b"b",
    "in/a/z.csv": b"az",
    "in/a/y.csv": b"ay",
    "in/.hidden.csv": b"h",
    "in/.cache/x.csv": b"hx",
    "in/a/.dot/w.csv": b"hw",
    "in/c/d/e.csv": b"cde",
    "other/q.csv": b"q",
}


def test_list_files_recursive_sorted_dots_skipped(store: dict[str, Any]) -> None:
    root, options = store["root"], store["options"]
    _write(root, options, FILES)
    expected = [f"{root}/in/{rel}" for rel in ("a/y.csv", "a/z.csv", "b.csv", "c/d/e.csv")]
    assert list_files(f"{root}/in", options) == expected
    assert list_files(f"{root}/in/", options) == expected
    assert list_files(f"{root}/in/b.csv", options) == [f"{root}/in/b.csv"]
    assert list_files(f"{root}/in") == expected  # the URL alone: credentials from the env
    assert len(list_files(root, options)) == 5


def test_list_files_keeps_the_url_spelling(request: pytest.FixtureRequest) -> None:
    info = request.getfixturevalue("azurite")
    container = make_container(info)[len("az://") :]
    _write(f"az://{container}", info["storage_options"], {"x/1.csv": b"1"})
    assert list_files(f"abfs://{container}/x") == [f"abfs://{container}/x/1.csv"]


def test_missing_and_empty_inputs(store: dict[str, Any]) -> None:
    root, options = store["root"], store["options"]
    with pytest.raises(InputError, match=f"input '{root}/nope' does not exist"):
        list_files(f"{root}/nope", options)
    with pytest.raises(InputError, match="does not exist"):
        list_files(f"{store['info']['protocol']}://nosuchcontainer42/x", options)
    with pytest.raises(InputError, match="holds no files"):
        list_files(root, options)  # empty container / bucket
    _write(root, options, {"in/.only-hidden": b"x"})
    with pytest.raises(InputError, match=f"input folder '{root}/in' holds no files"):
        list_files(f"{root}/in", options)


def _put_object(store: dict[str, Any], key: str, data: bytes = b"") -> None:
    """Write the object ``key`` under ``store``'s root with the service's own client, the
    name as it is (fsspec takes a trailing ``/`` off)."""
    info, bucket = store["info"], store["root"].split("://", 1)[1]
    if info["protocol"] == "az":
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(info["connection_string"])
        service.get_container_client(bucket).upload_blob(key, data, overwrite=True)
        return
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=info["endpoint_url"],
        aws_access_key_id=info["key"],
        aws_secret_access_key=info["secret"],
        region_name=info["region_name"],
    )
    client.put_object(Bucket=bucket, Key=key, Body=data)


def test_folder_markers_are_not_input_files(store: dict[str, Any]) -> None:
    """Zero-byte objects named like a folder (``in/images/``, as the AWS console's "Create
    folder" makes; an Azure blob ``in/empty/``) are folders, not input files: they were
    listed, then failed to download, failing the good files of their mini-batch with them.
    A real zero-byte file is still a file, and a folder URL ending in ``/`` still a folder."""
    root, options = store["root"], store["options"]
    _write(root, options, {"in/images/a.txt": b"a", "in/images/b.txt": b"b"})
    _put_object(store, "in/zero.txt")
    for marker in ("in/", "in/images/", "in/empty/"):
        _put_object(store, marker)
    images = [f"{root}/in/images/a.txt", f"{root}/in/images/b.txt"]
    assert list_files(root, options) == [*images, f"{root}/in/zero.txt"]
    assert list_files(f"{root}/in", options) == [*images, f"{root}/in/zero.txt"]
    assert list_files(f"{root}/in/images/", options) == images
    with pytest.raises(InputError, match=f"input folder '{root}/in/empty/' holds no files"):
        list_files(f"{root}/in/empty/", options)


def test_an_output_in_a_missing_bucket_or_container_says_so(store: dict[str, Any]) -> None:
    """An output URL whose container (or bucket) does not exist: the OutputError says so (it
    was blamed on the credentials for az://, and an internal FileNotFoundError for s3://)."""
    from daskscore.errors import OutputError
    from daskscore.io.outputdir import claim_remote_output
    from daskscore.io.outputlock import lock_output

    protocol = store["info"]["protocol"]
    kind = "container" if protocol == "az" else "bucket"
    url = f"{protocol}://{unique_name('missing')}/run1"  # (not made)
    lock = lock_output(url, "j1")
    with pytest.raises(OutputError) as got:
        claim_remote_output(url, "predictions.csv", False, lock.announce)
    text = str(got.value)
    assert text.startswith(f"output '{url}' cannot be written: its {kind} does not exist ("), text
    assert f"Create the {kind} first" in text and "credentials found" not in text, text


def test_download_keeps_order_and_names(store: dict[str, Any], tmp_path: Path) -> None:
    root, options = store["root"], store["options"]
    _write(root, options, FILES)
    urls = [f"{root}/in/b.csv", f"{root}/in/a/z.csv", f"{root}/other/q.csv", f"{root}/in/a/y.csv"]
    urls += [f"{root}/in/c/d/e.csv", f"{root}/in/b.csv"]  # a duplicate
    dest = tmp_path / "dl"
    local = download(urls, dest, options)
    assert [Path(p).name for p in local] == ["b.csv", "z.csv", "q.csv", "y.csv", "e.csv", "b.csv"]
    assert [Path(p).read_bytes() for p in local] == [b"b", b"az", b"q", b"ay", b"cde", b"b"]
    assert all(Path(p).parent == dest for p in local)
    assert local[0] == local[-1]
    # same base name from two folders: each in its own hash folder
    _write(root, options, {"y.csv": b"root-y"})
    twins = download([f"{root}/in/a/y.csv", f"{root}/y.csv"], tmp_path / "twins", options)
    assert [Path(p).name for p in twins] == ["y.csv", "y.csv"]
    assert len({Path(p).parent for p in twins}) == 2
    assert [Path(p).read_bytes() for p in twins] == [b"ay", b"root-y"]


def test_download_from_several_roots_and_chained_urls(tmp_path: Path) -> None:
    """One filesystem per protocol and bucket is reused within a download; URLs of other
    buckets, protocols and chains still resolve each to their own file."""
    mem = fsspec.filesystem("memory")
    for path, data in {"/b1/x.txt": b"1x", "/b2/x.txt": b"2x", "/b1/d/y.txt": b"1y"}.items():
        mem.pipe(path, data)
    local = tmp_path / "l.txt"
    local.write_bytes(b"local")
    urls = ["memory://b1/x.txt", "memory://b2/x.txt", "memory://b1/d/y.txt", str(local)]
    urls += ["simplecache::memory://b2/x.txt"]
    got = download(urls, tmp_path / "dl")
    assert [Path(p).read_bytes() for p in got] == [b"1x", b"2x", b"1y", b"local", b"2x"]
    assert got[3] == str(local)


@pytest.mark.parametrize(
    ("url", "modules"),
    [("s3://b/k", ["s3fs"]), ("abfs://c/x", ["adlfs"]), ("simplecache::gs://b/k", ["gcsfs"])]
    + [("/data/in", []), ("memory://x", []), ("file:///x", [])],
)
def test_backend_modules(url: str, modules: list[str]) -> None:
    assert backend_modules(url) == modules


def test_upload_tree_round_trip(store: dict[str, Any], tmp_path: Path) -> None:
    root, options = store["root"], store["options"]
    src = tmp_path / "out"
    files = {"predictions.csv": "p", "logs/user/w0.txt": "log", "sys/job.json": "{}", "x.tmp": ""}
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    (src / "empty-dir").mkdir()
    assert upload_tree(src, f"{root}/job1", options, exclude=("*.tmp",)) == 3
    listed = list_files(f"{root}/job1", options)
    assert listed == [f"{root}/job1/{r}" for r in sorted(set(files) - {"x.tmp"})]
    back = download(listed, tmp_path / "back", options)
    assert [Path(p).read_text() for p in back] == ["log", "p", "{}"]
    (tmp_path / "nothing").mkdir()
    assert upload_tree(tmp_path / "nothing", f"{root}/job2", options) == 0


def test_open_output_writes_a_file(store: dict[str, Any]) -> None:
    root, options = store["root"], store["options"]
    with open_output(f"{root}/res/out.txt", "w", options, encoding="utf-8") as f:
        f.write("héllo\n")
    with open_output(f"{root}/res/raw.bin", "wb") as f:  # credentials from the env
        f.write(b"\x00\x01")
    assert list_files(f"{root}/res", options) == [f"{root}/res/out.txt", f"{root}/res/raw.bin"]
    fs, base = filesystem(root, options)
    assert fs.cat(f"{base}/res/out.txt") == "héllo\n".encode()


def test_a_subprocess_sees_only_the_url(store: dict[str, Any]) -> None:
    """What the engine does: it is given ``--input az://...`` and finds the credentials in
    the environment the fixtures exported."""
    root, options = store["root"], store["options"]
    _write(root, options, {"in/1.csv": b"1", "in/2.csv": b"2"})
    code = "import sys; from daskscore.io.storage import list_files; print(list_files(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, f"{root}/in"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **store["info"]["env"]},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([f"{root}/in/1.csv", f"{root}/in/2.csv"])


def test_a_filesystem_made_under_other_storage_variables_is_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fsspec caches a filesystem by its arguments: one made from the environment's
    credentials and endpoint was handed out again after they changed (a notebook that sets
    other credentials between jobs read with the old ones)."""
    monkeypatch.delenv("DASKSCORE_STORAGE_OPTIONS", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    first, _ = filesystem("s3://bucket/x")
    assert filesystem("s3://bucket/x")[0] is first  # (unchanged: the cached one)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    assert filesystem("s3://bucket/x")[0] is not first


class _Recording:
    """A filesystem that records each ``put`` (and fails the first one when asked)."""

    def __init__(self, fs: Any, fail: bool) -> None:
        self.fs, self.fail, self.puts = fs, fail, []

    def put(self, local: list[str], remote: list[str]) -> None:
        self.puts.append([Path(r).name for r in remote])
        if self.fail:
            raise OSError("the store went away")
        self.fs.put(local, remote)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fs, name)


@pytest.mark.parametrize("fail", [False, True], ids=["landed", "failed"])
def test_the_summary_is_uploaded_after_everything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: bool
) -> None:
    """A folder with ``job_summary.json`` holds a finished job: it is put after the other
    files have landed, and not at all when they could not be (it went in the same concurrent
    put, and a store that failed midway could hold a "Completed" summary and no predictions)."""
    from daskscore.io import storage

    src = tmp_path / "out"
    for rel in ("predictions.csv", "job_summary.json", "logs/job_result.txt"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    real = storage.filesystem
    recorded: list[_Recording] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        fs, base = real(*args, **kwargs)
        recorded.append(_Recording(fs, fail))
        return recorded[-1], base

    monkeypatch.setattr(storage, "filesystem", recording)
    dest = tmp_path / "dest"
    if fail:
        with pytest.raises(OSError, match="went away"):
            upload_tree(src, str(dest), last=("job_summary.json",))
        assert recorded[0].puts == [["job_result.txt", "predictions.csv"]]
        assert not (dest / "job_summary.json").exists()
        return
    assert upload_tree(src, str(dest), last=("job_summary.json",)) == 3
    assert recorded[0].puts == [["job_result.txt", "predictions.csv"], ["job_summary.json"]]
    assert (dest / "job_summary.json").read_text() == "job_summary.json"
