"""The baselines daskscore is measured against, run by ``benchmarks/run.py`` in a fresh process.

``seq``
    One process: import the scoring script, ``init()``, then ``run()`` on each mini-batch of
    ``--mini-batch-size`` files (sorted by path, as daskscore cuts them), appending the rows to
    ``--output``.
``pool``
    ``multiprocessing.Pool(--processes)`` (fork) with ``initializer`` calling ``init()`` in each
    process (after capping torch to one intra-op thread, if the script uses torch), and
    ``pool.imap`` over the mini-batches (chunksize 1, imap's default, as written by hand; or
    ``--chunksize auto``: ``max(1, n_batches // (4 * processes))``).
    The workers also format their rows, so the parent only writes bytes, in order: a strong,
    hand-written baseline.
``chunks``
    Tabular inputs the plain way: one process, ``init()``, then for each CSV file (sorted)
    ``pandas.read_csv(path, chunksize=--mini-batch-size)`` and ``run()`` on each chunk of rows
    (a DataFrame indexed by row number in its file, as daskscore's tabular mode gives it).

All write the rows exactly as daskscore's ``append_row`` does (Azure's ``to_csv`` defaults:
space-separated, no header, no index; a list gives one line per element), so the three outputs
can be compared byte for byte.  Only the standard library is imported here (plus whatever the
scoring script imports), so the timings include no harness overhead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

_module: ModuleType | None = None


def list_input_files(folder: str) -> list[str]:
    """Absolute paths under ``folder``, recursive, dot-files and dot-folders skipped, sorted."""
    files: list[str] = []
    root_dir = os.path.realpath(folder)
    for root, dirs, names in os.walk(root_dir, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(os.path.join(root, n) for n in names if not n.startswith("."))
    if not files:
        raise SystemExit(f"baseline.py: no input files under {folder}")
    files.sort()
    return files


def import_script(script: str) -> ModuleType:
    """Import the scoring script as a module named after its file, its folder on sys.path."""
    code = os.path.dirname(os.path.abspath(script))
    if code not in sys.path:
        sys.path.insert(0, code)
    name = os.path.splitext(os.path.basename(script))[0]
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def format_rows(result: Any) -> bytes:
    """The ``append_row`` bytes of one ``run()`` result (a DataFrame or a list)."""
    if hasattr(result, "to_csv"):
        if len(result) == 0:
            return b""
        text = result.to_csv(sep=" ", header=False, index=False, lineterminator="\n")
        return text.encode("utf-8")
    items = list(result)
    if not items:
        return b""
    return ("\n".join(str(item).replace("\n", " ") for item in items) + "\n").encode("utf-8")


def run_formatted(mini_batch: list[str]) -> bytes:
    """``run()`` one mini-batch and format its rows (in a pool worker, or in-process)."""
    assert _module is not None
    return format_rows(_module.run(list(mini_batch)))


def pool_init() -> None:
    """Pool initializer: one intra-op thread per process for torch, then the script's init()."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    assert _module is not None
    if hasattr(_module, "init"):
        _module.init()


def batches(files: list[str], size: int) -> list[list[str]]:
    """Cut the sorted files into mini-batches of ``size``; the last takes the remainder."""
    return [files[i : i + size] for i in range(0, len(files), size)]


def results_seq(mini_batches: list[list[str]], processes: int) -> Iterator[bytes]:
    """The sequential loop: init() once, then every mini-batch in order."""
    assert _module is not None
    if hasattr(_module, "init"):
        _module.init()
    for mini_batch in mini_batches:
        yield run_formatted(mini_batch)


def results_pool(
    mini_batches: list[list[str]], processes: int, chunksize: str = "1"
) -> Iterator[bytes]:
    """The Pool baseline: imap over the mini-batches, results in order.

    ``chunksize`` "1" is imap's default, the loop a user writes by hand; "auto" is the tuned
    ``n_batches // (4 * processes)`` that ``Pool.map`` would pick.
    """
    if chunksize == "auto":
        size = max(1, len(mini_batches) // (4 * processes))
    else:
        size = int(chunksize)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes, initializer=pool_init) as pool:
        yield from pool.imap(run_formatted, mini_batches, chunksize=size)


def results_chunks(files: list[str], rows: int) -> Iterator[bytes]:
    """The read_csv loop: init() once, then run() on every ``rows``-row chunk of each file."""
    import pandas as pd

    assert _module is not None
    if hasattr(_module, "init"):
        _module.init()
    for path in files:
        with pd.read_csv(path, chunksize=rows) as reader:
            for chunk in reader:
                yield format_rows(_module.run(chunk))


def main(argv: list[str] | None = None) -> int:
    """Run one baseline; write the rows to --output and the phase timings to --timings."""
    global _module
    args = parse_args(argv)
    t0 = time.perf_counter()
    _module = import_script(args.script)
    files = list_input_files(args.input)
    mini_batches = batches(files, args.mini_batch_size)
    if args.torch_threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(args.torch_threads)
    t1 = time.perf_counter()
    if args.mode == "seq":
        results = results_seq(mini_batches, args.processes)
    elif args.mode == "chunks":
        results = results_chunks(files, args.mini_batch_size)
    else:
        results = results_pool(mini_batches, args.processes, args.chunksize)
    with open(args.output, "wb") as out:
        for data in results:
            out.write(data)
    t2 = time.perf_counter()
    if args.timings:
        timings = {"setup_s": t1 - t0, "score_s": t2 - t1}
        if args.mode != "chunks":  # chunks: rows, not files; the count is daskscore's
            timings["mini_batches"] = len(mini_batches)
        if "torch" in sys.modules:  # the parent's; Pool workers run with one thread each
            timings["torch_threads"] = sys.modules["torch"].get_num_threads()
        with open(args.timings, "w", encoding="utf-8") as fh:
            json.dump(timings, fh)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["seq", "pool", "chunks"])
    parser.add_argument("--script", required=True, help="the scoring script (score.py)")
    parser.add_argument("--input", required=True, help="the input folder")
    parser.add_argument("--output", required=True, help="the append_row file to write")
    parser.add_argument(
        "--mini-batch-size", type=int, default=10, help="files per mini-batch (chunks: rows)"
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--torch-threads", type=int, help="torch intra-op threads of this process (seq)"
    )
    parser.add_argument("--timings", help="write setup/score seconds here as JSON")
    parser.add_argument(
        "--chunksize", default="1", help="pool: imap chunksize, a number or 'auto' (default 1)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
