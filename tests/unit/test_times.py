"""Times as the package writes them (UTC, ISO 8601 with Z) and reads them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dynamo_cdc.export import ExportRequest
from dynamo_cdc.times import epoch_seconds, iso, parse_time

T = datetime(2026, 12, 6, 10, 1, 2, 345678, tzinfo=UTC)


@pytest.mark.parametrize(
    ("timespec", "text"),
    [
        ("seconds", "2026-12-06T10:01:02Z"),
        ("milliseconds", "2026-12-06T10:01:02.345Z"),
        ("microseconds", "2026-12-06T10:01:02.345678Z"),
    ],
)
def test_a_time_is_written_in_utc_with_z_to_the_precision_asked(timespec, text) -> None:
    assert iso(T, timespec) == text
    assert iso(T.astimezone(timezone(timedelta(hours=2))), timespec) == text
    assert iso(T.replace(tzinfo=None), timespec) == text  # naive is UTC
    assert iso(T.timestamp(), timespec) == text


def test_a_written_time_reads_back_as_the_same_instant() -> None:
    assert parse_time(iso(T)) == T
    assert parse_time("2026-12-06T10:01:02") == T.replace(microsecond=0)
    assert epoch_seconds(iso(T)) == epoch_seconds(T) == T.timestamp()
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_an_export_s_client_token_is_the_one_earlier_releases_computed() -> None:
    """A token that changed across an upgrade would start a second (paid) export of a request a
    retried run re-attaches to: these were computed by the release before times.iso."""
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/orders"
    at = datetime(2026, 12, 6, 10, 0, 1, 250000, tzinfo=UTC)
    assert ExportRequest("orders", "b", export_time=at).client_token(arn) == (
        "2c39a0311dabc203e7009f28d6b2d19a4e0a"
    )
    window = ExportRequest("orders", "b", incremental_from=at, incremental_to=at.replace(hour=11))
    assert window.client_token(arn) == "6e2dad09d34a24236cd5b171df9289bba4e6"
