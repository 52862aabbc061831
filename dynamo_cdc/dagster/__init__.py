"""Dagster orchestration of dynamo-cdc: per-table assets, a stream sensor, checks, automation.

Per configured table ``t`` (``<safe>`` = :func:`dynamo_cdc.config.dagster_safe_name` of ``t``:
``_`` -> ``__``, ``-`` -> ``_d``, ``.`` -> ``_p``, so ``app-events.v1`` -> ``app_devents_pv1``;
injective, the real name is in each asset's ``dynamodb_table`` metadata):

* ``dynamodb/<safe>/table``: external, observed with DescribeTable;
* ``dynamodb/<safe>/snapshot``: daily partitions, a PITR export at the partition's end (now for
  today) -> Parquet; a day before the earliest restorable time fails and names that time;
* ``dynamodb/<safe>/changes``: hourly partitions of stream change rows;
* ``dynamodb/<safe>/current``: the mirror (``dynamo_cdc.mirror``), refreshed by a declarative
  automation condition on a cron cadence after new snapshot or changes;
* ``<safe>_stream_sensor`` and ``<safe>_daily_snapshot_schedule`` (off unless the table list
  says ``snapshot_schedule=daily``).

Why the sensor captures and the runs record (the design choice):

The stream is read in the sensor tick, through the library's capture step
(:func:`dynamo_cdc.capture.capture_once`): the tick polls within a time budget, the library
writes the micro-batch's Parquet into the hour partitions and commits the lake checkpoint only
after the files are durable, and the tick then requests one run per hour touched with a run key
derived from the batch's files, whose materialization records rows, files, bytes, shard ranges
and lag. The alternatives were worse: a sensor that only *detects* new records would read the
stream twice; a run per poll that captures would need a run process every 30 s per table even
when nothing changed, and two such runs could overlap. Here:

* one capture per table at a time: only the sensor captures (the daemon never overlaps ticks of
  one sensor); ``capture=true`` runs exist for headless use (``sync --once``) with the sensor off;
* no duplicates: the checkpoint is committed after the Parquet, file names are deterministic
  and a re-read overwrites (library); a batch's run key is stable, so it is recorded once;
* the cursor stays small: the stream position is the checkpoint in the lake, the cursor only
  holds when the capture last caught up and the hours waiting to be compacted;
* the tick is bounded: the poll's time budget (default 20 s, at most 40 s) is below Dagster's
  60 s sensor timeout; a StreamGapError fails the tick with its message.

Runs that write a table's changes (batch records, compactions, backfills) share the Dagster pool
``dynamo_cdc_<safe>``; ``dagster_project/dagster.yaml`` limits every pool to one at a time.
Closed hours are compacted by runs the sensor requests (see :mod:`dynamo_cdc.compaction`).
"""

from dynamo_cdc.dagster.component import DynamoCdcComponent

__all__ = ["DynamoCdcComponent"]
