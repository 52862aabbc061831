"""Splitting a table's stream shards between capture workers: shard groups by lineage tree.

A table too big for one capture process is captured in ``N`` shard groups, each by whichever
worker holds the group's lease in the lake (:func:`dynamo_cdc.capture.capture_once` with
``groups=N``); each group commits its own checkpoint. This module decides which shards a group
reads.

The unit of assignment is a *lineage tree*: a shard, its parent, its children, their children,
..., as ``ParentShardId`` links them (DynamoDB Streams never merges shards: a shard names one
parent, so lineage is a forest). A whole tree belongs to one group, so "a parent is read to its
end before its children" stays a question inside one worker's reader, as it is with one group.

Which group holds a tree is *sticky*: a group that has any shard of a tree in its committed
checkpoint owns the tree (:func:`owners`). A shard enters a checkpoint when its group's reader
first lists it, and a parent leaves its group's checkpoint only in the commit that holds its
children (:meth:`dynamo_cdc.checkpoint.StreamCheckpoint.pruned`), so across a split (or a
rotation: a parent with one child) the new children find their unfinished or just-finished
parent held by its group and join it. Only a tree no group holds (a table captured for the
first time) is placed by a hash of its key, the smallest shard id in it (:func:`tree_group`):
stable across processes (CRC-32, not Python's salted ``hash``).

Trees are not re-balanced while workers run: moving a tree means moving its reader's position,
which only :func:`dynamo_cdc.capture.regroup` does, holding every group's lease. It splits a
checkpoint's shards by tree, balanced (:func:`split_checkpoint`), so a checkpoint of one group
(the single ``checkpoint.json`` of a table captured by one process) migrates to ``N`` groups
and back (:func:`merge_checkpoints`). In a checkpoint, a parent read to its end is pruned once
its children are in, so the subtrees below it split apart there: a stream that grew from one
shard by splits still spreads over the groups.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from dynamo_cdc.checkpoint import ShardCheckpoint, StreamCheckpoint
from dynamo_cdc.stream import Shard

log = logging.getLogger(__name__)


def tree_group(key: str, groups: int) -> int:
    """The group of a lineage tree no group holds: CRC-32 of its key modulo ``groups``."""
    return zlib.crc32(key.encode()) % groups


def lineage_trees(links: Mapping[str, str | None]) -> dict[str, str]:
    """Shard id -> the key of its lineage tree (the smallest shard id in the tree).

    Args:
        links: shard id -> parent shard id (None for none). A parent need not be a key (a
            trimmed or pruned parent still joins its children into one tree).
    """
    root: dict[str, str] = {}

    def find(x: str) -> str:
        root.setdefault(x, x)
        while root[x] != x:
            root[x] = root[root[x]]
            x = root[x]
        return x

    for sid, parent in links.items():
        a = find(sid)
        if parent:
            b = find(parent)
            if a != b:
                root[max(a, b)] = min(a, b)
    # union by smallest id: every tree's representative is its smallest member
    return {sid: find(sid) for sid in links}


def owners(listed: Sequence[Shard], held: Mapping[str, int], groups: int) -> dict[str, int]:
    """Listed shard id -> the group that reads it.

    Args:
        listed: the stream's shards (DescribeStream).
        held: shard id -> the group whose committed checkpoint holds it.
        groups: the number of groups.

    A tree (:func:`lineage_trees` of the listing's parent links) that one group holds shards of is that group's; a tree no group holds goes to
    :func:`tree_group` of its key. A tree held by several groups (a regroup split it at a shard
    read to its end and pruned since: its halves no longer share a listed ancestor in the
    checkpoints it was split from) gives each shard to the group holding it, else its nearest
    held ancestor, else its nearest held descendants (the smallest group): a parent and its
    unfinished children are never split, as they are in one checkpoint (see the module
    docstring).
    """
    parent = {s.shard_id: s.parent_shard_id for s in listed}
    trees = lineage_trees(parent)
    holders: dict[str, set[int]] = {}
    for sid, group in held.items():
        if sid in trees:
            holders.setdefault(trees[sid], set()).add(group)
    children: dict[str, list[str]] = {}
    for sid, p in parent.items():
        if p:
            children.setdefault(p, []).append(sid)

    def held_below(sid: str) -> set[int]:
        found: set[int] = set()
        todo = list(children.get(sid, ()))
        while todo:
            c = todo.pop()
            if c in held:
                found.add(held[c])
            else:
                todo.extend(children.get(c, ()))
        return found

    out: dict[str, int] = {}
    for sid in parent:
        tree = trees[sid]
        groups_of_tree = holders.get(tree, set())
        if not groups_of_tree:
            out[sid] = tree_group(tree, groups)
        elif len(groups_of_tree) == 1:
            out[sid] = next(iter(groups_of_tree))
        else:
            out[sid] = _nearest_holder(sid, parent, held, held_below, min(groups_of_tree))
    return out


def _nearest_holder(
    sid: str,
    parent: Mapping[str, str | None],
    held: Mapping[str, int],
    held_below: Callable[[str], set[int]],
    fallback: int,
) -> int:
    at: str | None = sid
    while at is not None:
        if at in held:
            return held[at]
        at = parent.get(at)
    below = held_below(sid)
    return min(below) if below else fallback


def shard_filter(
    held: Mapping[str, int], groups: int, group: int
) -> Callable[[Sequence[Shard]], set[str]]:
    """A :class:`~dynamo_cdc.stream.StreamReader` ``shard_filter``: the listed shards
    ``group`` reads (see :func:`owners`)."""

    def keep(listed: Sequence[Shard]) -> set[str]:
        return {sid for sid, g in owners(listed, held, groups).items() if g == group}

    return keep


def held_shards(checkpoints: Sequence[StreamCheckpoint]) -> dict[str, int]:
    """Shard id -> the group (index in ``checkpoints``) whose checkpoint holds it."""
    held: dict[str, int] = {}
    for group, checkpoint in enumerate(checkpoints):
        for sid in checkpoint.shards:
            if sid in held:
                log.warning(
                    "%s: shard %s is in the checkpoints of groups %d and %d",
                    checkpoint.table,
                    sid,
                    held[sid],
                    group,
                )
                continue
            held[sid] = group
    return held


def split_checkpoint(checkpoint: StreamCheckpoint, groups: int) -> list[StreamCheckpoint]:
    """``checkpoint``'s shards split into ``groups`` checkpoints, whole lineage trees each.

    The trees are :func:`lineage_trees` of the checkpoint's parent links: a shard read to its
    end and pruned (its children known) no longer joins its children's subtrees, so they can go
    to different groups; an unfinished parent is in the checkpoint, so it stays with its
    children. Trees go, largest first (then by key), to the group with the fewest shards: every
    group gets work when there are at least as many trees as groups. Nothing else may run
    meanwhile (:func:`dynamo_cdc.capture.regroup` holds every lease), so the result need not
    be a function of the shard ids alone, as the placement of trees no group holds is.
    """
    links = {sid: s.parent_shard_id for sid, s in checkpoint.shards.items()}
    trees: dict[str, list[str]] = {}
    for sid, key in lineage_trees(links).items():
        trees.setdefault(key, []).append(sid)
    parts: list[dict[str, ShardCheckpoint]] = [{} for _ in range(groups)]
    for _key, members in sorted(trees.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        smallest = min(range(groups), key=lambda g: (len(parts[g]), g))
        parts[smallest].update((sid, checkpoint.shards[sid]) for sid in members)
    return [
        replace(checkpoint, shards=dict(sorted(part.items())), rotation_cursor=None)
        for part in parts
    ]


def merge_checkpoints(table: str, checkpoints: Iterable[StreamCheckpoint]) -> StreamCheckpoint:
    """One checkpoint holding every group's shards: what the table's capture has committed.

    ``updated_at`` is the oldest group's (the table is as fresh as its stalest group).
    """
    parts = list(checkpoints)
    shards = {sid: s for c in parts for sid, s in c.shards.items()}
    arns = {c.stream_arn for c in parts if c.stream_arn}
    times = [c.updated_at for c in parts if c.updated_at is not None]
    if len(arns) > 1:
        log.warning("%s: the shard groups follow different streams: %s", table, sorted(arns))
    return StreamCheckpoint(
        table=table,
        stream_arn=min(arns) if arns else None,
        shards=dict(sorted(shards.items())),
        updated_at=min(times) if len(times) == len(parts) and times else None,
    )
