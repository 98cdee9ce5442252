"""The turn of a worker process's calls (:mod:`daskscore.worker.turn`), with real threads: a
call past its timeout that is left to finish (an in-process cluster) lets another job's task
take the turn, and its own task waits for the turn again when the call returns."""

from __future__ import annotations

import threading
import time

from daskscore.worker.turn import Turn


class _Job:
    """What the turn knows of a job: who holds it, and whether a run() of it is in flight."""

    in_flight = (0.0, 0, None)


def test_a_call_left_to_finish_past_its_timeout_gives_the_turn_and_waits_for_it_again() -> None:
    turn, a, b = Turn(), _Job(), _Job()
    a_in, b_in, a_returns, b_done = (threading.Event() for _ in range(4))
    order: list[str] = []

    def task_a() -> None:
        with turn.taken(a):
            a_in.set()
            a_returns.wait(30)  # (its run() is in flight)
            turn.resume()  # (run() returned)
            order.append("a goes on")

    def task_b() -> None:
        with turn.taken(b):
            b_in.set()
            b_done.wait(30)
            order.append("b done")

    threads = [threading.Thread(target=task_a), threading.Thread(target=task_b)]
    threads[0].start()
    assert a_in.wait(30)
    threads[1].start()
    assert not b_in.wait(0.3), "another job's task waits while the call runs in time"
    turn.overran(a)
    assert b_in.wait(30), "a call past its timeout holds the turn no more"
    a_returns.set()
    time.sleep(0.3)  # (a's task, had it not waited, would go on now)
    b_done.set()
    for thread in threads:
        thread.join(30)
    assert order == ["b done", "a goes on"]
    with turn.taken(b):  # (free again)
        pass


def test_a_thread_that_holds_the_turn_takes_it_again_at_once() -> None:
    turn, a = Turn(), _Job()
    with turn.taken(a), turn.taken(a):  # (no deadlock: nested)
        pass
