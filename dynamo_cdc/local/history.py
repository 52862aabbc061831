"""The write history of every table on the local AWS, and the clock it is stamped with.

Real DynamoDB can export a table "as it was" at any second of its point-in-time-recovery window
and can export the changes of a window (incremental export). moto keeps only the current items,
so the local AWS records every write itself: each table has an append-only log of
``(timestamp_micros, keys, old_image, new_image, user_identity)``. A table's state at a time T is
rebuilt by replaying the log up to T, and the changes of a window are read from it directly.

The timestamps come from :class:`Clock`, which tests can shift forward (and set) so that
"a day later" or "15 minutes of changes" need no waiting. Timestamps handed out by one clock
strictly increase, so the order of the log is the order of the writes.

Images are dicts in DynamoDB JSON (``{"S": "x"}``, binary as base64 text), never shared with moto.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

log = logging.getLogger(__name__)

Item = dict[str, Any]

#: The user identity DynamoDB puts on stream records of items deleted by TTL.
TTL_USER_IDENTITY = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}


def key_id(keys: Item) -> str:
    """A canonical text for a primary key (a dict of key attributes), usable as a dict key."""
    return orjson.dumps(keys, option=orjson.OPT_SORT_KEYS).decode()


def micros_to_datetime(micros: int) -> datetime:
    """Epoch microseconds -> an aware UTC datetime."""
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)


def datetime_to_micros(value: datetime | float | int) -> int:
    """An aware datetime (naive means UTC) or epoch seconds -> epoch microseconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(round(value.timestamp() * 1_000_000))
    return int(round(float(value) * 1_000_000))


class Clock:
    """The local AWS's notion of "now": wall time plus an offset that tests control.

    Readings strictly increase (by at least one microsecond), even when two writes fall within
    the same microsecond, so write timestamps also give the order of writes.
    """

    def __init__(self) -> None:
        self._offset_micros = 0
        self._last = 0
        self._lock = threading.Lock()

    @property
    def offset_seconds(self) -> float:
        """How far the clock is ahead of wall time."""
        return self._offset_micros / 1_000_000

    def peek_micros(self) -> int:
        """The current time in epoch microseconds, without consuming a tick."""
        with self._lock:
            return max(self._last, time.time_ns() // 1000 + self._offset_micros)

    def tick_micros(self) -> int:
        """A fresh timestamp, strictly greater than every one handed out before."""
        with self._lock:
            now = time.time_ns() // 1000 + self._offset_micros
            self._last = max(now, self._last + 1)
            return self._last

    def now(self) -> datetime:
        """The current time as an aware UTC datetime."""
        return micros_to_datetime(self.peek_micros())

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (negative values are refused: time never
        runs backwards for the write history)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset_micros += int(round(seconds * 1_000_000))

    def set(self, epoch_seconds: float) -> None:
        """Jump to ``epoch_seconds`` (must not be before the current reading)."""
        target = int(round(epoch_seconds * 1_000_000))
        with self._lock:
            now = max(self._last, time.time_ns() // 1000 + self._offset_micros)
            if target < now:
                raise ValueError("the clock only moves forward")
            self._offset_micros += target - now

    def reset(self) -> None:
        """Back to wall time (timestamps keep increasing: the last one is remembered)."""
        with self._lock:
            self._offset_micros = 0


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One change to one item: images are None where the item did not exist."""

    timestamp_micros: int
    keys: Item
    old_image: Item | None
    new_image: Item | None
    user_identity: dict[str, str] | None = None

    @property
    def event_name(self) -> str:
        """INSERT, MODIFY or REMOVE, as DynamoDB Streams names it."""
        if self.old_image is None:
            return "INSERT"
        if self.new_image is None:
            return "REMOVE"
        return "MODIFY"

    @property
    def when(self) -> datetime:
        return micros_to_datetime(self.timestamp_micros)


@dataclass(frozen=True, slots=True)
class ItemChange:
    """The net change of one item over a window (what an incremental export writes)."""

    keys: Item
    old_image: Item | None
    new_image: Item | None
    last_write_micros: int


@dataclass
class TableHistory:
    """The write log of one table incarnation (a re-created table gets a new history).

    Attributes:
        table_name / table_arn / table_id: what the table is called; the id is made up here
            (moto has none) and stays the same for the life of the table.
        created_micros: when the history started (table creation, by the local clock).
        pitr_since_micros: when point-in-time recovery was last turned on, or None when off.
    """

    table_name: str
    table_arn: str
    key_attributes: tuple[str, ...]
    created_micros: int
    table_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    pitr_since_micros: int | None = None
    moto_created_at: Any = None
    _times: list[int] = field(default_factory=list, repr=False)
    _records: list[WriteRecord] = field(default_factory=list, repr=False)

    def append(self, record: WriteRecord) -> None:
        if self._times and record.timestamp_micros < self._times[-1]:
            raise ValueError("write history must be appended in time order")
        self._times.append(record.timestamp_micros)
        self._records.append(record)

    def __len__(self) -> int:
        return len(self._records)

    def records(
        self, start_micros: int | None = None, end_micros: int | None = None
    ) -> list[WriteRecord]:
        """Records with ``start <= timestamp < end`` (either bound may be None)."""
        lo = 0 if start_micros is None else bisect.bisect_left(self._times, start_micros)
        hi = len(self._times) if end_micros is None else bisect.bisect_left(self._times, end_micros)
        return self._records[lo:hi]

    def state_at(self, at_micros: int) -> dict[str, Item]:
        """The table's items as of ``at_micros`` (writes at exactly that microsecond included),
        keyed by :func:`key_id` of the primary key."""
        state: dict[str, Item] = {}
        for rec in self.records(None, at_micros + 1):
            kid = key_id(rec.keys)
            if rec.new_image is None:
                state.pop(kid, None)
            else:
                state[kid] = rec.new_image
        return state

    def changes_between(self, start_micros: int, end_micros: int) -> list[ItemChange]:
        """The net change per item over ``[start, end)``, as an incremental export reports it.

        OldImage is the item as it was just before ``start`` (None if it did not exist), NewImage
        as it is at the last write of the window (None if deleted). An item created and deleted
        within the window did not exist at either end, so it is left out.
        """
        first: dict[str, WriteRecord] = {}
        last: dict[str, WriteRecord] = {}
        for rec in self.records(start_micros, end_micros):
            kid = key_id(rec.keys)
            first.setdefault(kid, rec)
            last[kid] = rec
        out = []
        for kid, first_rec in first.items():
            last_rec = last[kid]
            old, new = first_rec.old_image, last_rec.new_image
            if old is None and new is None:
                continue
            out.append(ItemChange(first_rec.keys, old, new, last_rec.timestamp_micros))
        return out


class WriteSubscriber(Protocol):
    """What a DynamoDB Streams simulator implements to be fed every write."""

    def record(
        self,
        table_name: str,
        event_name: str,
        keys: Item,
        old_image: Item | None,
        new_image: Item | None,
        when: datetime,
        user_identity: dict[str, str] | None = None,
    ) -> None: ...


TableKey = tuple[str, str, str]  # (account, region, table name)


class WriteHistory:
    """The histories of all tables, by (account, region, table name), and their subscribers."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._tables: dict[TableKey, TableHistory] = {}
        self._subscribers: list[WriteSubscriber | Callable[..., Any]] = []
        self._lock = threading.RLock()

    def subscribe(self, subscriber: WriteSubscriber | Callable[..., Any]) -> None:
        """Feed every future write to ``subscriber``: an object with a ``record(...)`` method
        (see :class:`WriteSubscriber`) or a callable with the same parameters."""
        with self._lock:
            self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Any) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s is not subscriber]

    def get(self, account: str, region: str, table_name: str) -> TableHistory | None:
        with self._lock:
            return self._tables.get((account, region, table_name))

    def register(self, account: str, region: str, history: TableHistory) -> TableHistory:
        """Start the history of a (new) table, replacing any previous incarnation's."""
        with self._lock:
            self._tables[(account, region, history.table_name)] = history
            return history

    def drop(self, account: str, region: str, table_name: str) -> None:
        with self._lock:
            self._tables.pop((account, region, table_name), None)

    def tables(self) -> Iterator[tuple[TableKey, TableHistory]]:
        with self._lock:
            return iter(list(self._tables.items()))

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()

    def record(
        self,
        account: str,
        region: str,
        table_name: str,
        keys: Item,
        old_image: Item | None,
        new_image: Item | None,
        user_identity: dict[str, str] | None = None,
    ) -> WriteRecord | None:
        """Append one write to the table's history and tell the subscribers.

        A write that changed nothing (old image == new image) is not a change: DynamoDB Streams
        emits no record for it, and it does not alter any point-in-time state, so it is dropped.
        """
        if old_image == new_image:
            return None
        with self._lock:
            history = self._tables.get((account, region, table_name))
            if history is None:
                log.warning("write to untracked table %s ignored by the history", table_name)
                return None
            rec = WriteRecord(self.clock.tick_micros(), keys, old_image, new_image, user_identity)
            history.append(rec)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            target: Callable[..., Any] = getattr(sub, "record", None) or sub  # type: ignore[assignment]
            try:
                target(
                    table_name,
                    rec.event_name,
                    keys,
                    old_image,
                    new_image,
                    rec.when,
                    user_identity=user_identity,
                )
            except Exception:  # a broken subscriber must not fail the client's write
                log.exception("write subscriber %r failed", sub)
        return rec
