"""Questions to the warm cluster's scheduler, each answered within a bound.

A scheduler that accepts connections and never answers (its process stopped, its event loop
hung) made ``daskscore run``, ``cluster status`` and ``cluster stop`` wait for ever:
``Client(timeout=)`` bounds only the TCP connect, not Dask's handshake that follows it.
:func:`answers` asks for the scheduler's identity on a connection of its own, in an event
loop of its own, and gives up after ``timeout`` seconds; :func:`ask` runs a question on a
client in a thread that is left behind (a daemon) when it has not answered in time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Seconds a command waits for the warm cluster's scheduler to answer (to connect, or a
#: question) before it says that it does not answer.
ANSWER_S = 10.0
#: ... that many seconds instead, from this environment variable (a test hook).
ANSWER_ENV = "DASKSCORE_WARM_ANSWER_S"


def answer_s() -> float:
    return float(os.environ.get(ANSWER_ENV) or ANSWER_S)


class NoAnswer(Exception):
    """The scheduler did not answer in time (or refused the connection): why, in words."""


def answers(address: str, timeout: float | None = None) -> None:
    """Return when the scheduler at ``address`` answers who it is; raise :class:`NoAnswer`
    (saying why) when it does not within ``timeout`` seconds."""
    from distributed.comm import connect

    limit = answer_s() if timeout is None else timeout

    async def identity() -> Any:
        comm = await connect(address, timeout=limit)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    def probe() -> None:
        asyncio.run(asyncio.wait_for(identity(), limit))

    try:
        if _loop_running():  # (a notebook's thread: asyncio.run is refused there)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(probe).result()
        else:
            probe()
    except (asyncio.TimeoutError, TimeoutError):
        raise NoAnswer(f"no answer in {limit:g} s") from None
    except (OSError, ValueError, TypeError) as exc:
        raise NoAnswer(f"{type(exc).__name__}: {exc}") from None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def ask(address: str, question: Callable[[Any], T], timeout: float | None = None) -> T:
    """``question(client)`` on a client of the scheduler at ``address``; :class:`NoAnswer`
    when the scheduler does not answer (first :func:`answers`, then the question itself, each
    within ``timeout`` seconds)."""
    from distributed import Client

    limit = answer_s() if timeout is None else timeout
    answers(address, limit)
    box: dict[str, Any] = {}

    def go() -> None:
        try:
            with Client(address, set_as_default=False, timeout=limit) as client:
                box["answer"] = question(client)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=go, name="daskscore-warm-question", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise NoAnswer(f"no answer in {limit:g} s")
    if "error" in box:
        exc = box["error"]
        raise NoAnswer(f"{type(exc).__name__}: {exc}")
    return box["answer"]


def servers_of(path: Path, program: str) -> list[Any]:
    """The warm cluster server processes (``psutil.Process``) whose command line runs
    ``program`` for the state file ``path``: found without the state file (one that is
    corrupt names none).  Their fork servers and workers, forked with the same command line,
    are left out."""
    import psutil

    found = {}
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        line = proc.info.get("cmdline") or []
        if program in line and any(
            a == "--state" and b == str(path) for a, b in zip(line, line[1:], strict=False)
        ):
            found[proc.pid] = proc
    return [p for p in found.values() if p.info.get("ppid") not in found]
