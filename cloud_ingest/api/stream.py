"""Where a queue-change stream is in the audit-event sequence, gaps included.

Audit event ids come from a sequence, but transactions commit in their own order: on PostgreSQL
a reader can see id 12 committed while id 11 (a slower transaction of another worker) is still
in flight. A cursor that only remembered "the highest id seen" would skip id 11 for good. So the
cursor also remembers the ids it has not seen below its high-water mark and asks for them again
until they appear or ``gap_s`` passes (a rolled-back transaction leaves a gap that never fills).
The cursor is pure; :func:`alert_feed` polls the service with it for both SSE endpoints (the
API's ``/api/v1/alerts/stream`` and the web queue's ``/ui/queue/stream``), which differ only in
how they write a change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from starlette.requests import Request

    from cloud_ingest.care import Principal
    from cloud_ingest.service import IngestService
    from cloud_ingest.storage.records import AlertEventRecord, AlertRecord

T = TypeVar("T")

#: How long a gap is looked for: far longer than any ingest transaction (a batch commits in
#: milliseconds; a stuck one is retried and re-numbered).
GAP_S: Final = 30.0
#: Bound on the gaps remembered (a burst of rollbacks must not grow the cursor without end).
MAX_GAPS: Final = 10_000
#: How often a stream looks for new queue changes. The database is the bus, so every ingest
#: worker's changes reach every API process; 0.2 s keeps the stream within the queue's latency
#: aim (publish to visible, p99 <= 250 ms in issue 6) at one small indexed query per client.
POLL_S: Final = 0.2
#: How often an open stream asks again who its client is: a sign-out, a revoked or re-issued
#: token, a deactivation or a change of teams reaches an open stream within this time.
RECHECK_S: Final = 5.0
#: Longest audit id a client may resume from (PostgreSQL bigint).
MAX_EVENT_ID: Final = 2**63 - 1


def resume_point(last_event_id: str | None, after: int | None = None) -> int | None:
    """Where a (re)connecting client left off: ``after`` if given, else a numeric
    ``Last-Event-ID``; None means "from now on"."""
    if after is not None:
        return after
    if (
        last_event_id is not None
        and 0 < len(last_event_id) <= 19
        and last_event_id.isascii()
        and last_event_id.isdigit()
        and int(last_event_id) <= MAX_EVENT_ID
    ):
        return int(last_event_id)
    return None


async def start_point(service: IngestService, start: int | None) -> int:
    return start if start is not None else await run_in_threadpool(service.last_alert_change_id)


async def alert_feed(
    request: Request,
    service: IngestService,
    principal: Principal,
    start: int,
    *,
    recheck: Callable[[], Principal | None],
    poll_s: float = POLL_S,
    recheck_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[tuple[AlertEventRecord, AlertRecord]]:
    """Every queue change after ``start`` that the client may see, in audit-id order, each
    once, until the client disconnects or ``recheck`` (run every ``recheck_s`` in a worker
    thread) says it is nobody any more; a principal whose teams changed is followed."""
    cursor = ChangeCursor(start)
    every = RECHECK_S if recheck_s is None else recheck_s
    checked = clock()
    while not await request.is_disconnected():
        if clock() - checked >= every:
            now_who = await run_in_threadpool(recheck)
            if now_who is None:
                return
            principal, checked = now_who, clock()
        seen, changes = await run_in_threadpool(
            partial(
                service.alert_changes,
                principal=principal,
                after_id=cursor.after,
                also_ids=cursor.pending(),
            )
        )
        for change in cursor.take(seen, [(ev.id, (ev, a)) for ev, a in changes]):
            yield change
        await asyncio.sleep(poll_s)


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
