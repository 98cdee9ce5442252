"""How many mini-batches each task carries: the dispatcher's task-sizing policy.

One Dask task per mini-batch costs 3-15x in overhead (scheduler round trips, serialisation) when
``run()`` itself takes a millisecond, so a task carries several.  Guided self-scheduling: each
new task takes ``remaining / (workers * GUIDED_FACTOR)`` mini-batches, so early tasks are big
(little overhead) and the last ones are small (a slow worker or slow files hold nobody back) —
but never less than :data:`MIN_TASK_SECONDS` of work once the mini-batches' mean time is known.
"""

from __future__ import annotations

import math

#: A task carries several mini-batches: one Dask task per mini-batch costs 3-15x in overhead
#: (scheduler round trips, serialisation) when run() itself takes a millisecond.
#: Guided self-scheduling: each new task takes remaining / (workers * GUIDED_FACTOR)
#: mini-batches, so early tasks are big (little overhead) and the last ones are small (a slow
#: worker or slow files hold nobody back).  4 keeps the tail to about a quarter of one
#: worker's share.
GUIDED_FACTOR = 4
#: Upper bound on mini-batches per task, so that progress is reported and a crash loses at
#: most this much uncommitted work.
MAX_TASK_MINI_BATCHES = 2000
#: The shortest task worth sending once mini-batches are known to be quick: the round trip
#: between a worker finishing a task and the driver's next one reaching it (5-50 ms on two
#: busy cores) must fit in the task queued behind it.
MIN_TASK_SECONDS = 0.1
#: Tasks in flight per worker: one running, one queued behind it so a worker never waits for
#: the driver's round trip between two tasks.
TASKS_PER_WORKER = 2
#: The most mini-batches of a worker's first task: one made and sent in a millisecond, so that
#: every worker starts scoring while the big tasks behind it are made (a first task of a
#: thousand mini-batches of ten files took 10-15 ms to make, the first four 50).
FIRST_TASK_MINI_BATCHES = 32


def next_task_size(
    remaining: int, workers: int, cap: int = MAX_TASK_MINI_BATCHES, least: int = 1
) -> int:
    """How many mini-batches the next task takes (guided self-scheduling).

    ``least``: a floor for the tail, where guided sizes shrink to one mini-batch: a task so
    short that it ends before the driver's next one reaches the worker leaves the worker
    idle, once per task.  The dispatcher sizes it to a tenth of a second of work, which is
    then the most the last task can keep one worker busy after the others are done.

    Examples
    --------
    >>> next_task_size(10_000, 2)
    1250
    >>> next_task_size(3, 2)
    1
    >>> next_task_size(40, 2, least=15)
    15
    >>> next_task_size(12, 2, least=15)
    12
    """
    if remaining <= 0:
        return 0
    size = max(math.ceil(remaining / (max(workers, 1) * GUIDED_FACTOR)), least)
    return max(1, min(size, cap, remaining))


class TaskSizing:
    """The sizes of a job's tasks, learning the mini-batches' mean time as they finish.

    Examples
    --------
    >>> sizing = TaskSizing()
    >>> [sizing.next_size(remaining=10_000, workers=2) for _ in range(3)]  # a first each: small
    [32, 32, 1250]
    >>> sizing.next_size(remaining=40, workers=2)
    5
    >>> sizing.observe(count=10, seconds=0.01)  # 1 ms a mini-batch: tasks of >= 100
    >>> sizing.next_size(remaining=40, workers=2)
    40
    """

    def __init__(
        self, cap: int = MAX_TASK_MINI_BATCHES, min_task_s: float = MIN_TASK_SECONDS
    ) -> None:
        self.cap = cap
        self.min_task_s = min_task_s
        #: seconds and count of the mini-batches finished so far
        self.seconds = 0.0
        self.count = 0
        self.sized = 0  # tasks sized so far (the first of each worker: small)

    def observe(self, count: int, seconds: float) -> None:
        """``count`` more mini-batches finished, in ``seconds`` of work in all."""
        self.count += count
        self.seconds += seconds

    def least(self) -> int:
        """The fewest mini-batches that make a task of ``min_task_s``, from the mean time of
        the mini-batches finished so far (1 until one has)."""
        if not self.count or self.seconds <= 0:
            return 1
        mean = self.seconds / self.count
        return max(1, min(self.cap, int(self.min_task_s / mean)))

    def next_size(self, remaining: int, workers: int) -> int:
        """How many of the ``remaining`` mini-batches the next task takes (a worker's first:
        at most :data:`FIRST_TASK_MINI_BATCHES`)."""
        size = next_task_size(remaining, workers, self.cap, least=self.least())
        self.sized += 1
        return min(size, FIRST_TASK_MINI_BATCHES) if self.sized <= max(workers, 1) else size

    @staticmethod
    def window(workers: int) -> int:
        """How many tasks may be in flight at once."""
        return max(1, workers) * TASKS_PER_WORKER
