"""A driver script: your own Dask client, then daskscore.run() and daskscore.score() on it.

Scores the digits-cnn example (120 images, a small PyTorch CNN) through its unchanged Azure ML
scoring script, on a cluster this script connects to (``--scheduler``) or, without one, on a
LocalCluster it starts itself::

    python configs/driver-script/driver.py --output out/driver-script
    python configs/driver-script/driver.py --scheduler tcp://scheduler:8786 \\
        --input s3://bucket/digits/ --output out/driver-script --no-score

Paths of the example are found from this file's own location, so it runs from any folder;
``--output`` is relative to where you run it.  See README.md beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distributed import Client, LocalCluster

import daskscore

EXAMPLE = Path(__file__).resolve().parent.parent / "digits-cnn"
DEPLOYMENT = EXAMPLE / "deployment.yml"
SAMPLE_INPUTS = EXAMPLE / "sample-inputs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a running Dask scheduler (tcp://host:8786, or tls://... with TLS set in Dask's "
        "config); default: start a LocalCluster of 2 single-threaded workers here",
    )
    parser.add_argument(
        "--input",
        default=str(SAMPLE_INPUTS),
        metavar="PATH",
        help="input folder or fsspec URL (default: the example's 120 sample images; use a URL "
        "on a cluster whose workers do not see this machine's files)",
    )
    parser.add_argument(
        "--output",
        default="out/driver-script",
        metavar="DIR",
        help="output folder or URL (default: out/driver-script); replaced if it exists",
    )
    parser.add_argument(
        "--no-score",
        action="store_true",
        help="skip the daskscore.score() part (it needs workers that see this machine's files)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cluster = None
    if args.scheduler:
        # TLS: Client() takes its certificates from Dask's config (distributed.comm.tls.*),
        # or pass security=distributed.security.Security(...) here
        client = Client(args.scheduler)
    else:
        # loopback only, the dashboard on a free port
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
        client = Client(cluster)
    try:
        n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
        print(f"Cluster: {client.scheduler.address}, {n_workers} workers")

        # 1. The whole job, as `daskscore run` does it, on this client (left open by daskscore).
        result = daskscore.run(DEPLOYMENT, args.input, args.output, client=client, overwrite=True)
        print(
            f"run(): {result.status}: {result.succeeded_items} of {result.total_items} items "
            f"succeeded, {result.failed_items} failed, in {result.duration_s:.1f} s"
        )
        print(f"run(): predictions in {result.predictions}")

        # 2. The same scoring script as a lazy Dask DataFrame, on the same client.
        if not args.no_score:
            # (leaving the session uninstalls the script: its shutdown() runs on every worker)
            with daskscore.open_session(DEPLOYMENT, args.input, client=client) as session:
                ddf = session.frame
                print("score(): first rows:")
                print(ddf.head(3).to_string(index=False))
                per_class = client.compute(ddf.groupby("class").size()).result().sort_index()
                print(f"score(): {int(per_class.sum())} rows; images per predicted class:")
                print(per_class.to_string())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return 0


if __name__ == "__main__":  # the guard is needed: Dask starts worker processes with spawn
    raise SystemExit(main())
