"""Where a queue-change stream is in the audit-event sequence, gaps included.

Audit event ids come from a sequence, but transactions commit in their own order: on PostgreSQL
a reader can see id 12 committed while id 11 (a slower transaction of another worker) is still
in flight. A cursor that only remembered "the highest id seen" would skip id 11 for good. So the
cursor also remembers the ids it has not seen below its high-water mark and asks for them again
until they appear or ``gap_s`` passes (a rolled-back transaction leaves a gap that never fills).
Pure; the stream endpoint feeds it what each poll found.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeVar

T = TypeVar("T")

#: How long a gap is looked for: far longer than any ingest transaction (a batch commits in
#: milliseconds; a stuck one is retried and re-numbered).
GAP_S: Final = 30.0
#: Bound on the gaps remembered (a burst of rollbacks must not grow the cursor without end).
MAX_GAPS: Final = 10_000


class ChangeCursor:
    def __init__(
        self,
        after: int,
        *,
        gap_s: float = GAP_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.after = after
        self._gap_s = gap_s
        self._clock = clock
        self._missing: dict[int, float] = {}

    def pending(self) -> list[int]:
        """Ids below the high-water mark still awaited (expired ones are forgotten)."""
        now = self._clock()
        expired = [i for i, since in self._missing.items() if now - since > self._gap_s]
        for i in expired:
            del self._missing[i]
        return sorted(self._missing)

    def advance(self, seen_ids: Iterable[int]) -> set[int]:
        """Record the ids one poll found; return those not seen before (to be delivered)."""
        now = self._clock()
        fresh: set[int] = set()
        top = self.after
        for i in sorted(set(seen_ids)):
            if i > self.after or i in self._missing:
                fresh.add(i)
                self._missing.pop(i, None)
                top = max(top, i)
        for gap in range(self.after + 1, top):
            if gap not in fresh and len(self._missing) < MAX_GAPS:
                self._missing.setdefault(gap, now)
        self.after = top
        return fresh

    def take(self, seen_ids: Iterable[int], rows: Sequence[tuple[int, T]]) -> list[T]:
        """The rows (keyed by id) of this poll that were not delivered before, in id order."""
        fresh = self.advance(seen_ids)
        return [row for i, row in sorted(rows, key=lambda r: r[0]) if i in fresh]
