"""Stream records as boto3 gives them, for the tests of change rows and change files.

from stream_records import KEYS, T0, record  # tests/unit is on sys.path for tests in tests/unit
"""

from __future__ import annotations

from datetime import UTC, datetime

KEYS = (("pk", "S"), ("sk", "N"))
T0 = datetime(2024, 3, 1, 10, 59, 59, tzinfo=UTC)


def record(
    i: int,
    event: str = "MODIFY",
    *,
    seq: int | None = None,
    when: datetime | float = T0,
    ttl: bool = False,
    pk: str = "a",
) -> dict:
    keys = {"pk": {"S": pk}, "sk": {"N": str(i)}}
    new = {**keys, "v": {"N": str(i * 10)}, "b": {"B": b"\x00\xff"}}
    old = {**keys, "v": {"N": "1.50"}}
    d: dict = {
        "Keys": keys,
        "SequenceNumber": str(seq if seq is not None else 1000 + i),
        "SizeBytes": 50,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
        "ApproximateCreationDateTime": when,
    }
    if event != "REMOVE":
        d["NewImage"] = new
    if event != "INSERT":
        d["OldImage"] = old
    rec = {"eventID": f"ev-{i}", "eventName": event, "eventSource": "aws:dynamodb", "dynamodb": d}
    if ttl:
        rec["userIdentity"] = {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}
    return rec
