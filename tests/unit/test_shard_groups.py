"""Capturing one table in shard groups: which group reads which shard, across splits and
trims, the migration from (and back to) one checkpoint, and lease takeover.

The stream is the DynamoDB Streams simulator behind a real boto3 client (as in
``test_stream_reader.py``); leases are the lake's (a local ``flock``; S3 ones in the
integration tests).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from dynamo_cdc.capture import regroup
from dynamo_cdc.checkpoint import CheckpointStore, ShardCheckpoint, StreamCheckpoint
from dynamo_cdc.errors import CheckpointError, LakeBusyError
from dynamo_cdc.lake import Lake
from dynamo_cdc.local.streams import ManualClock, StreamSimulator
from dynamo_cdc.shardgroups import lineage_trees, owners, split_checkpoint, tree_group
from dynamo_cdc.stream import Shard, list_shards
from tests.unit.test_stream_reader import (
    TABLE,
    Workload,
    _assert_exactly_once_in_order,
    _capture,
    _client,
    _drain,
    _sim,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_709_290_800.0)  # 2024-03-01T11:00:00Z


def _ids_in_groups(groups: int, want: list[int]) -> list[str]:
    """Shard ids in ascending order (as DynamoDB's, whose ids start with their creation time)
    whose own tree (alone) goes to the groups ``want``."""
    out = []
    for n, g in enumerate(want):
        prefix = f"shardId-{n:02d}-"
        out.append(
            next(
                f"{prefix}{i}" for i in itertools.count() if tree_group(f"{prefix}{i}", groups) == g
            )
        )
    return out


def test_a_split_parent_and_its_children_are_read_by_one_group() -> None:
    root, a, b = _ids_in_groups(2, [0, 1, 1])
    listed = [Shard(root), Shard(a, parent_shard_id=root), Shard(b, parent_shard_id=root)]
    assert lineage_trees({s.shard_id: s.parent_shard_id for s in listed}) == dict.fromkeys(
        [root, a, b], root
    )
    # Nobody holds the tree: its key (the smallest id, the root's) places the whole of it.
    assert owners(listed, {}, 2) == {root: 0, a: 0, b: 0}
    # Group 1 holds the parent (an earlier poll listed it): the children join it.
    assert owners(listed, {root: 1}, 2) == {root: 1, a: 1, b: 1}


def test_children_stay_with_their_group_after_the_parent_is_trimmed() -> None:
    root, a, b = _ids_in_groups(2, [0, 1, 1])
    grandchild = "shardId-99-0"
    # The parent was read, pruned and then trimmed: alone, the children's tree would hash to 1.
    listed = [
        Shard(a, parent_shard_id=root),
        Shard(b, parent_shard_id=root),
        Shard(grandchild, parent_shard_id=a),
    ]
    assert tree_group(min(a, b), 2) == 1
    assert owners(listed, {a: 0, b: 0}, 2) == {a: 0, b: 0, grandchild: 0}


def test_a_tree_split_by_a_regroup_keeps_each_subtree_with_its_group() -> None:
    # r -> c1, c2 read and pruned; c1 -> d1, c2 -> d2 open; a regroup put d1 and d2 apart.
    listed = [
        Shard("r"),
        Shard("c1", "r", ending_sequence_number="9"),
        Shard("c2", "r", ending_sequence_number="9"),
        Shard("d1", "c1"),
        Shard("d2", "c2"),
        Shard("e1", "d1"),  # d1 just split: its child joins d1's group
    ]
    out = owners(listed, {"d1": 1, "d2": 0}, 2)
    assert out["d1"] == out["e1"] == out["c1"] == 1
    assert out["d2"] == out["c2"] == 0


def test_split_checkpoint_puts_pruned_subtrees_apart_and_unfinished_parents_with_children() -> None:
    shards = {
        # below a pruned parent "c1": one tree
        "d1": ShardCheckpoint("5", parent_shard_id="c1"),
        "d2": ShardCheckpoint("6", parent_shard_id="c1"),
        # below a pruned parent "c2", an unfinished parent and its child
        "d3": ShardCheckpoint("7", parent_shard_id="c2"),
        "e3": ShardCheckpoint(None, parent_shard_id="d3"),
        # a root alone
        "z": ShardCheckpoint("8"),
    }
    checkpoint = StreamCheckpoint(TABLE, "arn", shards, updated_at=5.0, rotation_cursor="z")
    parts = split_checkpoint(checkpoint, 2)
    # largest trees first, each to the group with the fewest shards
    assert [sorted(p.shards) for p in parts] == [["d1", "d2", "z"], ["d3", "e3"]]
    assert all(p.stream_arn == "arn" and p.updated_at == 5.0 for p in parts)
    assert [sorted(p.shards) for p in split_checkpoint(checkpoint, 1)] == [sorted(shards)]


@pytest.fixture
def grown(tmp_path, clock) -> tuple[StreamSimulator, Any, Lake, Workload]:
    """A stream grown from one shard to four by two splits, captured to its end by one process:
    ``(simulator, streams client, lake, workload)``."""
    sim = _sim(clock)
    client, lake, work = _client(sim), Lake(str(tmp_path)), Workload(sim, keys=80)
    for _ in range(2):
        work.write(300)
        sim.rotate(TABLE, split=True)
    work.write(300)
    _drain(sim, client, lake, clock)
    return sim, client, lake, work


def test_the_first_grouped_capture_splits_the_single_checkpoint_and_reads_nothing_twice(
    grown, clock
) -> None:
    sim, client, lake, work = grown
    work.write(400)

    for group in (0, 1):
        _drain(sim, client, lake, clock, groups=2, group=group)

    _assert_exactly_once_in_order(lake, work)
    assert not lake.exists(f"{TABLE}/_state/stream/checkpoint.json")
    held = [set(CheckpointStore(lake, TABLE, g).load().shards) for g in (0, 1)]
    assert len(held[0]) == len(held[1]) == 2 and not held[0] & held[1]
    # What the other jobs read (verify, compaction, the freshness check): every group's shards.
    merged = CheckpointStore(lake, TABLE)
    assert set(merged.load().shards) == held[0] | held[1] and merged.groups == 2


def test_groups_captured_in_turns_through_splits_land_every_record_once_in_order(
    grown, clock
) -> None:
    sim, client, lake, work = grown
    regroup(lake, TABLE, 2)
    for _ in range(3):
        work.write(600)
        for group in (1, 0):  # a partial poll of each group, then the leaves split
            _capture(sim, client, lake, clock, groups=2, group=group)
        sim.rotate(TABLE, split=True)
        clock.advance(30)
    work.write(600)
    for group in (0, 1):
        _drain(sim, client, lake, clock, groups=2, group=group)

    _assert_exactly_once_in_order(lake, work)  # lineage order per key, through 3 splits
    parts = [CheckpointStore(lake, TABLE, g).load() for g in (0, 1)]
    assert len(parts[0].shards) == len(parts[1].shards) == 16
    open_leaves = {s.shard_id for s in list_shards(client, sim.stream_arn(TABLE)) if not s.closed}
    assert set(parts[0].shards) | set(parts[1].shards) == open_leaves
    assert not set(parts[0].shards) & set(parts[1].shards)


def test_a_single_capture_of_a_grouped_table_is_refused_and_a_regroup_to_one_resumes_it(
    grown, clock
) -> None:
    sim, client, lake, work = grown
    work.write(300)
    _capture(sim, client, lake, clock, groups=2, group=0)

    with pytest.raises(CheckpointError, match="captured in 2 shard groups"):
        _capture(sim, client, lake, clock)
    with pytest.raises(CheckpointError, match="captured in 2 shard groups, not 3"):
        _capture(sim, client, lake, clock, groups=3, group=0)

    regroup(lake, TABLE, 1)
    _drain(sim, client, lake, clock)
    _assert_exactly_once_in_order(lake, work)
    assert not lake.exists(f"{TABLE}/_state/stream/groups/groups.json")


def test_a_checkpoint_reset_of_a_grouped_table_is_split_again_by_the_next_capture(
    grown, clock
) -> None:
    from dynamo_cdc.heal import reset_checkpoint

    sim, client, lake, work = grown
    regroup(lake, TABLE, 2)
    work.write(300)
    _capture(sim, client, lake, clock, groups=2, group=1)

    reset_checkpoint(lake, TABLE)  # holds every group's lease; the groups re-read everything
    for group in (0, 1):
        _drain(sim, client, lake, clock, groups=2, group=group)

    _assert_exactly_once_in_order(lake, work)


def test_a_group_held_by_a_live_worker_is_not_taken_and_a_dead_workers_is(grown, clock) -> None:
    """A worker's lease excludes every other capture of its group; when the worker is gone
    (a local lock dies with its process; here: the holder's block ends abnormally after writing
    and before committing) the next capture takes the group over, re-reads the uncommitted
    records and lands each once."""
    sim, client, lake, work = grown
    regroup(lake, TABLE, 2)
    work.write(500)
    seen: list[int] = []

    def meanwhile(files: list[str]) -> None:
        seen.append(len(files))
        with pytest.raises(LakeBusyError, match="shard group 0 of 2"):
            _capture(sim, client, lake, clock, groups=2, group=0, lock_wait_seconds=0)
        # the other group is free
        _capture(sim, client, lake, clock, groups=2, group=1, lock_wait_seconds=0)
        raise SystemExit("the worker dies after writing, before committing")

    with pytest.raises(SystemExit):
        _capture(sim, client, lake, clock, groups=2, group=0, after_write=meanwhile)
    assert seen and seen[0] > 0

    for group in (0, 1):
        _drain(sim, client, lake, clock, groups=2, group=group, lock_wait_seconds=0)
    _assert_exactly_once_in_order(lake, work)
