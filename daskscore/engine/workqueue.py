"""The dispatcher's queue of mini-batches still to run: a cursor over the job's states (one
byte per mini-batch), after any put back at the front; a few bytes per mini-batch whatever
the job's size."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

#: A mini-batch's state (0: not settled) to 1 if it is still to run.
_TODO = bytes([1] + [0] * 255)


class WorkQueue:
    """The mini-batches left to run, in order: those not settled when the job started (a
    cursor over the job's states, one byte each), after any put back at the front."""

    def __init__(self, state: bytearray) -> None:
        #: 1 for each mini-batch still to take from the cursor
        self.todo = state.translate(_TODO) if any(state) else None
        self.n = len(state)
        self.cursor = 0
        self.left = self.todo.count(1) if self.todo is not None else self.n
        self.front: deque[int] = deque()

    def _advance(self) -> None:
        if self.todo is not None and self.left:
            found = self.todo.find(1, self.cursor)
            self.cursor = found if found >= 0 else self.n

    def __len__(self) -> int:
        return len(self.front) + self.left

    def __bool__(self) -> bool:
        return bool(self.front) or self.left > 0

    def __getitem__(self, index: int) -> int:
        if index != 0 or not self:
            raise IndexError(index)
        if self.front:
            return self.front[0]
        self._advance()
        return self.cursor

    def popleft(self) -> int:
        if self.front:
            return self.front.popleft()
        if not self.left:
            raise IndexError("pop from an empty queue")
        self._advance()
        mb = self.cursor
        self.cursor += 1
        self.left -= 1
        return mb

    def take(self, size: int, isolate: set[int]) -> list[int]:
        """Up to ``size`` mini-batches from the front, stopping before an isolated one."""
        ids: list[int] = []
        front = self.front
        while front and len(ids) < size and front[0] not in isolate:
            ids.append(front.popleft())
        if front or len(ids) >= size or not self.left:
            return ids
        if self.todo is None:  # a run of the cursor: never isolated (none of it ran yet)
            count = min(size - len(ids), self.left)
            ids.extend(range(self.cursor, self.cursor + count))
            self.cursor += count
            self.left -= count
            return ids
        while self.left and len(ids) < size:
            ids.append(self.popleft())
        return ids

    def extendleft(self, mbs: Iterable[int]) -> None:
        self.front.extendleft(mbs)

    def clear(self) -> None:
        self.front.clear()
        self.left = 0
        self.cursor = self.n
