"""StreamCheckpoint: versioned JSON, pruning of finished shards, atomic storage in the lake."""

from __future__ import annotations

import orjson
import pytest

from dynamo_cdc.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    CheckpointStore,
    ShardCheckpoint,
    StreamCheckpoint,
)
from dynamo_cdc.lake import Lake

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"


def _checkpoint() -> StreamCheckpoint:
    return StreamCheckpoint(
        table="orders",
        stream_arn=ARN,
        updated_at=1_700_000_000.5,
        rotation_cursor="shard-b",
        shards={
            "shard-a": ShardCheckpoint("300", True, None, "2024-01-01T00:00:00.000000Z"),
            "shard-b": ShardCheckpoint("410", False, "shard-a", "2024-01-01T01:00:00.000000Z"),
            "shard-c": ShardCheckpoint(None, False, "shard-a", None),
            "shard-d": ShardCheckpoint("500", True, None, "2024-01-01T02:00:00.000000Z"),
        },
    )


def test_json_round_trip_keeps_everything_but_pruned_shards() -> None:
    ckpt = _checkpoint()
    back = StreamCheckpoint.from_json(ckpt.to_json(), table="orders")
    assert back.version == CHECKPOINT_VERSION
    assert back.stream_arn == ARN
    assert back.updated_at == 1_700_000_000.5
    assert back.rotation_cursor == "shard-b"
    # shard-a is finished and its children are known: pruned. shard-d is finished but has no
    # known child yet: kept, so its children are recognised as children when they appear.
    assert set(back.shards) == {"shard-b", "shard-c", "shard-d"}
    assert back.shards["shard-b"] == ckpt.shards["shard-b"]
    assert back.shards["shard-d"].finished


def test_json_is_deterministic_and_versioned() -> None:
    raw = _checkpoint().to_json()
    assert raw == _checkpoint().to_json()
    data = orjson.loads(raw)
    assert data["version"] == CHECKPOINT_VERSION
    assert data["table"] == "orders"


def test_unfinished_parent_is_never_pruned() -> None:
    ckpt = StreamCheckpoint(
        table="orders",
        stream_arn=ARN,
        shards={"p": ShardCheckpoint("1", False), "c": ShardCheckpoint(None, False, "p")},
    )
    assert set(ckpt.pruned().shards) == {"p", "c"}


def test_checkpoint_of_5000_shards_stays_small() -> None:
    shards = {
        f"shardId-00000001700000000000-{i:08x}": ShardCheckpoint(
            str(10**25 + i), False, None, "2024-01-01T00:00:00.000000Z"
        )
        for i in range(5000)
    }
    raw = StreamCheckpoint("orders", ARN, shards).to_json()
    assert len(raw) < 1_500_000


def test_unknown_version_is_refused_with_a_fix() -> None:
    with pytest.raises(CheckpointError, match="version 99") as err:
        StreamCheckpoint.from_json(b'{"version": 99, "table": "orders"}', table="orders")
    assert err.value.fix


def test_corrupt_json_is_refused() -> None:
    with pytest.raises(CheckpointError, match="not valid JSON"):
        StreamCheckpoint.from_json(b"{nope", table="orders")


def test_other_tables_checkpoint_is_refused() -> None:
    raw = _checkpoint().to_json()
    with pytest.raises(CheckpointError, match="belongs to table 'orders'"):
        StreamCheckpoint.from_json(raw, table="users")


def test_store_loads_a_new_checkpoint_when_none_was_committed(tmp_path) -> None:
    store = CheckpointStore(Lake(str(tmp_path)), "orders")
    ckpt = store.load()
    assert ckpt.is_new and ckpt.table == "orders" and ckpt.shards == {}


def test_store_commits_atomically_at_the_state_path(tmp_path) -> None:
    lake = Lake(str(tmp_path))
    store = CheckpointStore(lake, "orders")
    store.commit(_checkpoint())
    assert (tmp_path / "orders" / "_state" / "stream" / "checkpoint.json").is_file()
    assert [p.name for p in (tmp_path / "orders" / "_state" / "stream").iterdir()] == [
        "checkpoint.json"
    ]
    loaded = store.load()
    assert loaded.shards == _checkpoint().pruned().shards
    assert not loaded.is_new


def test_store_refuses_another_tables_checkpoint(tmp_path) -> None:
    store = CheckpointStore(Lake(str(tmp_path)), "users")
    with pytest.raises(CheckpointError):
        store.commit(_checkpoint())
