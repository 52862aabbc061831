"""Stream records -> change-row Parquet: naive vs ours, on one core, records already fetched.

    python -m bench.stream_records        # BENCH_RECORDS=100000 BENCH_REPEAT=3

Records are shaped as boto3's ``dynamodbstreams.get_records`` returns them: ``eventID``,
``eventName``, ``eventVersion``, ``eventSource``, ``awsRegion``, ``dynamodb`` with
``ApproximateCreationDateTime`` (a timezone-aware datetime), ``Keys``, ``NewImage``,
``OldImage``, ``SequenceNumber``, ``SizeBytes``, ``StreamViewType``; binary values are
``bytes``; TTL deletes carry ``userIdentity``. The mix is 50% MODIFY, 35% INSERT, 15% REMOVE
(a fifth of the removes are TTL deletes).

``ours`` is ``dynamo_cdc.convert:records_to_table``, imported lazily and skipped when absent,
then the bytes of a change file (``dynamo_cdc.changefiles.parquet_bytes``, as ``write_change_batch``
writes them). Both sides end with Parquet bytes in memory so they do the same amount of work.

A second table starts one step earlier, from the GetRecords response bytes (1,000 records a
response, as the API returns them at most; compact JSON, as AWS sends it) and goes as capture
goes: each response parsed into records, 50 responses (a poll at the default budget of 50,000
records) made into one table of change rows (``dynamo_cdc.convert.pages_to_table``), then
written into a lake on local disk as capture writes them (``write_change_batch``: sorted by
hour, shard and sequence number, checked against the files already there, one zstd Parquet file
a poll). The records are parsed by botocore alone (boto3's default), or by the
product's before-parse handler (``dynamo_cdc.stream.read_records``) with the C readers off
(orjson: record dicts, made into rows by the reference, ``dynamo_cdc.convert.records``: what a
refusal costs) or on (the C reader: columns, no dicts).

``BENCH_NAIVE=0`` skips naive (its pandas frame dominates the process's peak memory). The last
lines give the C readers' refusals (responses and record lists that took the reference) and the
process's peak RSS.

``ours`` and the parses run with the cyclic GC paused, as ``capture_once`` runs its read and
write (``dynamo_cdc.convert.cyclic_gc_paused``); naive runs as a plain program would.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench.generate import Item, make_item

OURS = "dynamo_cdc.convert:records_to_table"
SHARD_ID = "shardId-00000001700000000000-0123abcd"
KEY_NAMES = ("pk", "sk")
KEY_ATTRIBUTES = [(name, "S") for name in KEY_NAMES]
POLL_RESPONSES = 50  # responses of 1,000 records a poll reads at the default budget


def _to_wire(value: dict[str, Any]) -> dict[str, Any]:
    """Internal representation (B as base64 text) -> boto3's (B as bytes)."""
    ((tag, v),) = value.items()
    if tag == "B":
        return {"B": base64.b64decode(v)}
    if tag == "BS":
        return {"BS": [base64.b64decode(x) for x in v]}
    if tag == "M":
        return {"M": {k: _to_wire(x) for k, x in v.items()}}
    if tag == "L":
        return {"L": [_to_wire(x) for x in v]}
    return value


def _wire_item(item: Item) -> dict[str, Any]:
    return {k: _to_wire(v) for k, v in item.items()}


def generate_records(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` stream records as boto3 returns them, the same ones for the same seed.

    Args:
        n: Number of records.
        seed: Random seed.

    Returns:
        A list of record dicts (NEW_AND_OLD_IMAGES view).
    """
    rng = random.Random(seed)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    seq = 10**20
    records = []
    for i in range(n):
        item = make_item(rng, i)
        keys = {k: item[k] for k in KEY_NAMES}
        roll = rng.random()
        ddb: dict[str, Any] = {
            "ApproximateCreationDateTime": start + dt.timedelta(seconds=i // 50),
            "Keys": _wire_item(keys),
        }
        record: dict[str, Any] = {
            "eventID": f"{rng.getrandbits(128):032x}",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
        }
        if roll < 0.35:
            record["eventName"] = "INSERT"
            ddb["NewImage"] = _wire_item(item)
        elif roll < 0.85:
            record["eventName"] = "MODIFY"
            old = dict(item)
            old["status"] = {"S": "PENDING"}
            old["revision"] = {"N": "1"}
            ddb["OldImage"] = _wire_item(old)
            ddb["NewImage"] = _wire_item(item)
        else:
            record["eventName"] = "REMOVE"
            ddb["OldImage"] = _wire_item(item)
            if roll > 0.97:
                # boto3's spelling (botocore's model): Type / PrincipalId.
                record["userIdentity"] = {
                    "Type": "Service",
                    "PrincipalId": "dynamodb.amazonaws.com",
                }
        seq += rng.randrange(1, 10**6)
        ddb["SequenceNumber"] = str(seq)
        ddb["SizeBytes"] = 900 + rng.randrange(0, 600)
        ddb["StreamViewType"] = "NEW_AND_OLD_IMAGES"
        record["dynamodb"] = ddb
        records.append(record)
    return records


def _json_default(v: Any) -> Any:
    from boto3.dynamodb.types import Binary

    if isinstance(v, Binary):  # its str() returns bytes, which json.dumps rejects
        return base64.b64encode(v.value).decode("ascii")  # type: ignore[attr-defined]
    if isinstance(v, set | frozenset):
        return sorted(v, key=repr)
    return str(v)


def naive_records_to_parquet(records: list[dict[str, Any]]) -> bytes:
    """The first thing people write: TypeDeserializer per image, json.dumps, pandas."""
    import pandas as pd
    from boto3.dynamodb.types import TypeDeserializer

    deser = TypeDeserializer()

    def plain(image: dict[str, Any] | None) -> dict[str, Any] | None:
        if image is None:
            return None
        return {k: deser.deserialize(v) for k, v in image.items()}

    rows = []
    for r in records:
        d = r["dynamodb"]
        keys = plain(d["Keys"]) or {}
        new = plain(d.get("NewImage"))
        old = plain(d.get("OldImage"))
        rows.append(
            {
                "event_id": r["eventID"],
                "event_name": r["eventName"],
                "sequence_number": d["SequenceNumber"],
                "shard_id": SHARD_ID,
                "approximate_creation_time": d["ApproximateCreationDateTime"],
                "ttl_delete": "userIdentity" in r,
                **{k: str(v) for k, v in keys.items()},
                # Decimal, set and Binary are not JSON: the default below flattens them,
                # losing the N/S and set/list distinctions.
                "_new_image": None if new is None else json.dumps(new, default=_json_default),
                "_old_image": None if old is None else json.dumps(old, default=_json_default),
            }
        )
    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf, index=False)
    return buf.getvalue()


def _load_ours() -> Callable[[list[dict[str, Any]]], bytes] | str:
    module_name, _, func_name = OURS.partition(":")
    try:
        module = importlib.import_module(module_name)
        func = getattr(module, func_name)
    except (ImportError, AttributeError) as exc:
        return f"{OURS} not available yet ({type(exc).__name__}: {exc})"
    from dynamo_cdc.changefiles import parquet_bytes as to_parquet
    from dynamo_cdc.convert import cyclic_gc_paused

    def ours(records: list[dict[str, Any]]) -> bytes:
        with cyclic_gc_paused():
            return to_parquet(func(records, KEY_ATTRIBUTES, shard_ids=SHARD_ID))

    return ours


def time_it(func: Callable[[list[dict[str, Any]]], bytes], records: list, repeat: int) -> float:
    """Median wall seconds of ``func(records)`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func(records)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _response_bodies(records: list[dict[str, Any]], per: int = 1000) -> list[bytes]:
    """GetRecords response bodies as the API sends them (compact JSON, binary base64, times
    epoch seconds)."""

    def wire(v: Any) -> Any:
        if isinstance(v, bytes):
            return base64.b64encode(v).decode("ascii")
        if isinstance(v, dt.datetime):
            return int(v.timestamp()) if v.microsecond == 0 else v.timestamp()
        if isinstance(v, dict):
            return {k: wire(x) for k, x in v.items()}
        if isinstance(v, list):
            return [wire(x) for x in v]
        return v

    return [
        json.dumps(
            {"NextShardIterator": "it", "Records": wire(records[i : i + per])},
            separators=(",", ":"),
        ).encode()
        for i in range(0, len(records), per)
    ]


def _from_responses(bodies: list[bytes], handler: Any, native: bool, repeat: int) -> float:
    """Median seconds to take every body as capture does: parsed (by botocore, with ``handler``
    before it if given, the C reader on or off), a poll's responses made into change rows, those
    written as a change file's bytes."""
    import botocore.session
    from botocore.parsers import create_parser

    from dynamo_cdc.changefiles import write_change_batch
    from dynamo_cdc.convert import cyclic_gc_paused, pages_to_table
    from dynamo_cdc.convert import native as native_module
    from dynamo_cdc.lake import Lake

    model = botocore.session.get_session().get_service_model("dynamodbstreams")
    shape = model.operation_model("GetRecords").output_shape
    parser = create_parser(model.metadata["protocol"])

    def run(_: Any) -> bytes:
        with tempfile.TemporaryDirectory() as root:  # a new lake each run: nothing to skip
            lake = Lake(root)
            for lo in range(0, len(bodies), POLL_RESPONSES):
                with cyclic_gc_paused():  # as capture_once reads and writes
                    pages = []
                    for body in bodies[lo : lo + POLL_RESPONSES]:
                        response = {"body": body, "headers": {}, "status_code": 200}
                        custom: dict[str, Any] = {}
                        if handler is not None:
                            handler(response_dict=response, customized_response_dict=custom)
                        parsed = parser.parse(response, shape)
                        parsed.update(custom)
                        pages.append((SHARD_ID, parsed["Records"]))
                    write_change_batch(lake, "bench", pages_to_table(pages, KEY_ATTRIBUTES))
        return b""

    was = native_module.ENABLED
    native_module.ENABLED = native and was
    try:
        return time_it(run, [], repeat)
    finally:
        native_module.ENABLED = was


def main() -> int:
    """Generate the records, time naive and ours, print records/s."""
    n = int(os.environ.get("BENCH_RECORDS") or 100_000)
    repeat = max(1, int(os.environ.get("BENCH_REPEAT") or 3))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    records = generate_records(n)
    rows: list[tuple[str, float | None, str]] = []
    naive_rate = None
    if os.environ.get("BENCH_NAIVE", "1") != "0":
        naive_seconds = time_it(naive_records_to_parquet, records, repeat)
        rows.append(("naive", naive_seconds, ""))
        naive_rate = n / naive_seconds
    ours = _load_ours()
    if isinstance(ours, str):
        rows.append(("ours", None, f"skipped: {ours}"))
    else:
        rows.append(("ours", time_it(ours, records, repeat), ""))
    print(f"\n{n:,} stream records, one core, median of {repeat}\n")
    print("| approach | records/s | vs naive | note |\n|---|---:|---:|---|")
    for name, seconds, note in rows:
        if seconds is None:
            print(f"| {name} | - | - | {note} |")
        else:
            rate = n / seconds
            versus = f"{rate / naive_rate:.2f}x" if naive_rate else "-"
            print(f"| {name} | {rate:,.0f} | {versus} | {note} |")
    if not isinstance(ours, str):
        try:
            from dynamo_cdc.convert.native import ENABLED as native_built
            from dynamo_cdc.stream import read_records
        except ImportError:
            return 0
        bodies = _response_bodies(records)
        del records
        parsers = [
            ("botocore (boto3's default), C readers off (the reference)", None, False),
            (
                "orjson (the StreamReader's handler), C readers off (the reference)",
                read_records,
                False,
            ),
        ]
        if native_built:
            parsers.append(
                ("the C reader (the StreamReader's handler), then ours", read_records, True)
            )
        print(
            f"\nFrom GetRecords response bytes to change files in a lake on local disk "
            f"({len(bodies)} responses, {POLL_RESPONSES} a poll), one core, median of {repeat}\n"
        )
        print("| records parsed by | records/s | vs botocore |\n|---|---:|---:|")
        base = None
        for label, handler, native in parsers:
            rate = n / _from_responses(bodies, handler, native, repeat)
            base = base or rate
            print(f"| {label} | {rate:,.0f} | {rate / base:.2f}x |")
    _print_refusals_and_memory()
    return 0


def _print_refusals_and_memory() -> None:
    import resource

    from dynamo_cdc.convert import native

    counted = native.counts()
    refusals = "; ".join(tally.message(kind) for kind, tally in sorted(counted.items()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"\nC readers: {refusals or 'nothing counted'}; peak RSS {peak:,.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
