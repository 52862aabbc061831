"""Times as this package writes and reads them: UTC, ISO 8601 with ``Z``; and DynamoDB's time
constants.

A naive datetime is UTC everywhere (boto3 gives aware ones; the checkpoint's texts carry ``Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

#: How long DynamoDB Streams keeps a record (the stream's retention, fixed by AWS).
STREAM_RETENTION_SECONDS = 24 * 3600.0


def aware(dt: datetime) -> datetime:
    """``dt`` with UTC as its zone when it has none."""
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def iso(
    when: datetime | float,
    timespec: Literal["seconds", "milliseconds", "microseconds"] = "microseconds",
) -> str:
    """``when`` (a datetime, or epoch seconds) as ISO 8601 in UTC with ``Z``, to ``timespec``:
    ``2026-12-06T10:00:00.000000Z``."""
    dt = (
        aware(when).astimezone(UTC)
        if isinstance(when, datetime)
        else datetime.fromtimestamp(when, tz=UTC)
    )
    return dt.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def parse_time(text: str) -> datetime:
    """An ISO-8601 time (``Z`` allowed) as an aware datetime (UTC when it names no zone).

    Raises:
        ValueError: ``text`` is not an ISO-8601 time.
    """
    return aware(datetime.fromisoformat(text.replace("Z", "+00:00")))


def epoch_seconds(when: float | datetime | str) -> float:
    """Epoch seconds of a time given as epoch seconds, a datetime or ISO text."""
    if isinstance(when, str):
        when = parse_time(when)
    if isinstance(when, datetime):
        return aware(when).timestamp()
    return float(when)
