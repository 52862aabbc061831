"""A seeded random workload against DynamoDB: puts, updates, deletes, batch and transactional
writes. Used by the demo (to keep changes flowing) and by tests and the chaos run.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

OPERATIONS = ("put", "update", "delete", "batch", "transact")


@dataclass
class Workload:
    """Random writes to one table whose key is ``hash_key`` (S) and optionally ``range_key`` (S).

    Args:
        client: a boto3 DynamoDB client.
        table: the table name.
        hash_key / range_key: key attribute names (both strings).
        seed: the RNG seed: the same seed gives the same operations.
        keys: how many distinct keys the workload touches (collisions make updates and deletes).
        ttl_attribute: if set, some items get an already-due TTL (for the TTL sweep).
        body_bytes: if set, (low, high): each item gets a ``body`` text of that many bytes, so
            items have production's size (a GetRecords page of 1 MB then holds a few hundred).
        large_share: the share of items whose ``body`` is ``large_bytes`` instead (near
            DynamoDB's 400 KB item limit: a page holds two).
    """

    client: Any
    table: str
    hash_key: str
    range_key: str | None = None
    seed: int = 0
    keys: int = 500
    ttl_attribute: str | None = None
    body_bytes: tuple[int, int] | None = None
    large_share: float = 0.0
    large_bytes: int = 350_000
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OPERATIONS, 0))

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._stop = threading.Event()

    def _key(self) -> dict[str, Any]:
        n = self.rng.randrange(self.keys)
        key = {self.hash_key: {"S": f"k{n % 97:03d}" if self.range_key else f"k{n:05d}"}}
        if self.range_key:
            key[self.range_key] = {"S": f"r{n:05d}"}
        return key

    def _item(self) -> dict[str, Any]:
        item = self._key()
        r = self.rng
        item["amount"] = {"N": f"{r.randrange(10**6)}.{r.randrange(100):02d}"}
        item["qty"] = {"N": str(r.randrange(1, 50))}
        item["status"] = {"S": r.choice(["new", "paid", "shipped", "cancelled"])}
        item["flags"] = {"SS": sorted({r.choice("abcdef") for _ in range(3)})}
        item["meta"] = {"M": {"v": {"N": str(r.randrange(1000))}, "ok": {"BOOL": r.random() < 0.5}}}
        if r.random() < 0.2:
            item["blob"] = {"B": r.randbytes(8)}
        if self.body_bytes is not None:
            size = (
                self.large_bytes if r.random() < self.large_share else r.randint(*self.body_bytes)
            )
            item["body"] = {"S": r.randbytes(size // 2).hex()}
        if self.ttl_attribute and r.random() < 0.05:
            item[self.ttl_attribute] = {"N": str(int(time.time()) - 60)}
        return item

    def _key_id(self, item: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(item[k]) for k in (self.hash_key, self.range_key) if k)

    def step(self) -> str:
        """Run one random operation; returns its name."""
        op = self.rng.choices(OPERATIONS, weights=(40, 30, 15, 10, 5))[0]
        c = self.client
        if op == "put":
            c.put_item(TableName=self.table, Item=self._item())
        elif op == "update":
            c.update_item(
                TableName=self.table,
                Key=self._key(),
                UpdateExpression="SET qty = if_not_exists(qty, :zero) + :one, #s = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":s": {"S": self.rng.choice(["paid", "shipped"])},
                },
            )
        elif op == "delete":
            c.delete_item(TableName=self.table, Key=self._key())
        elif op == "batch":
            # one request may not touch a key twice: keep the last request per key
            requests: dict[tuple[str, ...], Any] = {}
            for _ in range(self.rng.randrange(2, 10)):
                if self.rng.random() < 0.8:
                    item = self._item()
                    requests[self._key_id(item)] = {"PutRequest": {"Item": item}}
                else:
                    key = self._key()
                    requests[self._key_id(key)] = {"DeleteRequest": {"Key": key}}
            batch = list(requests.values())
            while batch:
                out = c.batch_write_item(RequestItems={self.table: batch})
                batch = out.get("UnprocessedItems", {}).get(self.table, [])
        else:
            puts = {}
            for _ in range(self.rng.randrange(2, 5)):
                item = self._item()
                puts[self._key_id(item)] = {"Put": {"TableName": self.table, "Item": item}}
            try:
                c.transact_write_items(TransactItems=list(puts.values()))
            except ClientError as exc:  # a conflicting transaction is cancelled, as on AWS
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
        self.counts[op] += 1
        return op

    def run(self, operations: int) -> dict[str, int]:
        """Run ``operations`` random operations."""
        for _ in range(operations):
            self.step()
        return dict(self.counts)

    def run_in_background(self, per_second: float) -> threading.Thread:
        """Keep writing about ``per_second`` operations a second until :meth:`stop`."""

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.step()
                except Exception:  # the demo's server may be stopping; keep going quietly
                    if self._stop.is_set():
                        return
                self._stop.wait(1.0 / per_second)

        thread = threading.Thread(target=loop, name=f"workload-{self.table}", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
