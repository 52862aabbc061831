"""Demo tables for the local AWS: what ``python -m dynamo_cdc.local --demo`` creates.

* ``orders``: key ``customer_id`` (S) + ``order_id`` (S), a few orders with numbers, maps,
  lists, sets and binary.
* ``app-events.v1``: key ``event_id`` (S), a name with ``-`` and ``.`` on purpose (the lake and
  Dagster must cope with it), TTL on ``expires_at``.

Both with a NEW_AND_OLD_IMAGES stream and point-in-time recovery on, plus the export bucket
``dynamo-cdc-exports``. The streams are the local AWS's stream simulator's (they are enabled by
CreateTable like any other), so the sample items are their first records and shard rotation,
trims and faults can be driven through the control API. Creating them again is harmless
(existing ones are left as they are).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

DEMO_BUCKET = "dynamo-cdc-exports"
DEMO_TABLES: dict[str, dict[str, Any]] = {
    "orders": {
        "KeySchema": [
            {"AttributeName": "customer_id", "KeyType": "HASH"},
            {"AttributeName": "order_id", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "customer_id", "AttributeType": "S"},
            {"AttributeName": "order_id", "AttributeType": "S"},
        ],
    },
    "app-events.v1": {
        "KeySchema": [{"AttributeName": "event_id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "event_id", "AttributeType": "S"}],
        "ttl_attribute": "expires_at",
    },
}
DEMO_ITEMS: dict[str, list[dict[str, Any]]] = {
    "orders": [
        {
            "customer_id": {"S": "c-001"},
            "order_id": {"S": "o-1001"},
            "total": {"N": "42.50"},
            "quantity": {"N": "3"},
            "status": {"S": "shipped"},
            "tags": {"SS": ["gift", "express"]},
            "address": {"M": {"city": {"S": "Lyon"}, "zip": {"S": "69001"}}},
            "lines": {"L": [{"M": {"sku": {"S": "A-1"}, "qty": {"N": "2"}}}]},
        },
        {
            "customer_id": {"S": "c-001"},
            "order_id": {"S": "o-1002"},
            "total": {"N": "7"},
            "quantity": {"N": "1"},
            "status": {"S": "pending"},
            "gift": {"BOOL": True},
            "note": {"NULL": True},
        },
        {
            "customer_id": {"S": "c-002"},
            "order_id": {"S": "o-2001"},
            "total": {"N": "1999.99"},
            "quantity": {"N": "12"},
            "status": {"S": "delivered"},
            "receipt": {"B": "cmVjZWlwdA=="},
            "ratings": {"NS": ["4", "5"]},
        },
    ],
    "app-events.v1": [
        {
            "event_id": {"S": "e-0001"},
            "kind": {"S": "login"},
            "user": {"S": "alice"},
            "expires_at": {"N": "4102444800"},
        },
        {"event_id": {"S": "e-0002"}, "kind": {"S": "logout"}, "user": {"S": "bob"}},
    ],
}


def _clients(clients_or_endpoint: Any) -> tuple[Any, Any]:
    if isinstance(clients_or_endpoint, str):
        from dynamo_cdc.aws import Clients
        from dynamo_cdc.config import Settings

        # placeholder credentials: whatever real ones this process has are never sent here
        clients_or_endpoint = Clients(
            Settings(
                endpoint_url=clients_or_endpoint, access_key_id="local", secret_access_key="local"
            )
        )
    return clients_or_endpoint.dynamodb, clients_or_endpoint.s3


def create_demo_tables(clients_or_endpoint: Any, *, with_items: bool = True) -> list[str]:
    """Create the demo tables and the export bucket (idempotent).

    Args:
        clients_or_endpoint: a :class:`dynamo_cdc.aws.Clients`, or the local AWS endpoint URL.
        with_items: also put a few sample items into newly created tables.

    Returns:
        The demo table names.
    """
    dynamodb, s3 = _clients(clients_or_endpoint)
    existing = set(dynamodb.list_tables().get("TableNames", []))
    for name, spec in DEMO_TABLES.items():
        if name in existing:
            continue
        dynamodb.create_table(
            TableName=name,
            KeySchema=spec["KeySchema"],
            AttributeDefinitions=spec["AttributeDefinitions"],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        dynamodb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )
        if spec.get("ttl_attribute"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": spec["ttl_attribute"]},
            )
        if with_items:
            for item in DEMO_ITEMS.get(name, []):
                dynamodb.put_item(TableName=name, Item=item)
        log.info("created demo table %s", name)
    buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if DEMO_BUCKET not in buckets:
        s3.create_bucket(Bucket=DEMO_BUCKET)
    return list(DEMO_TABLES)
