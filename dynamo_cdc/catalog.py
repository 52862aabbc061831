"""Apache Iceberg tables over the lake: ``snapshot``, ``changes`` and ``current`` in a catalog.

Engines (Athena, Spark, Trino, Snowflake, DuckDB, pyiceberg, polars) read a lake table through
its Iceberg table with no code of ours. Per DynamoDB table ``<t>`` there are three Iceberg tables
in the namespace ``dynamo_cdc`` (``DYNAMO_CDC_ICEBERG_NAMESPACE``), named
``<safe>_snapshot``, ``<safe>_changes`` and ``<safe>_current``, where ``<safe>`` is
:func:`dynamo_cdc.config.dagster_safe_name` of ``<t>`` (``_s`` and ``_c`` are never escapes in
it, so the names never collide).

* ``snapshot`` and ``changes`` register the plain Parquet files we write (no copy, no rewrite):
  ``snapshot`` is partitioned by ``export_date`` (identity; the column is not in the files, so
  readers take it from the partition metadata, as the Iceberg spec says for identity partitions),
  ``changes`` by ``hours(approximate_creation_time)``. A publish of a snapshot partition
  replaces that partition's files in one commit; change files are reconciled with the lake
  (files that a compaction replaced leave the table in the same commit as their successor
  enters it).
* ``current`` is a plain table whose scan is one row per live key, deletes applied (no view, no
  QUALIFY): the fast merge-on-read mirror (:mod:`dynamo_cdc.mirror`) keeps serving
  :func:`dynamo_cdc.read_table`, and :func:`publish_current` writes, for each key-hash bucket
  that changed since the last publish, one file of that bucket's merged rows, and swaps them
  for the bucket's old file in one overwrite commit. Unchanged buckets are not rewritten.
  :func:`dynamo_cdc.read_table` scans it (:func:`read_published_current`) when it was published
  from the mirror's version, and merges the mirror otherwise.

The catalog: by default pyiceberg's SQL catalog on SQLite, the database at
``<root>/_iceberg/catalog.db`` and each table's metadata under ``<root>/<t>/_iceberg/<view>/``,
so a lake root alone is enough to find everything. On an ``s3://`` root the database is an
object at the same place: a writer downloads it, commits, and uploads it with ``If-Match`` its
ETag (``If-None-Match: *`` the first time), so two writers are serialised by S3's conditional
write as they are by SQLite's transaction locally; the loser retries. ``DYNAMO_CDC_ICEBERG=glue``
uses the AWS Glue Data Catalog (pyiceberg's Glue catalog) and ``rest`` a REST catalog
(``DYNAMO_CDC_ICEBERG_URI``); ``off`` disables the tables.

Every commit is retried on a conflict (another writer committed first): the table is loaded
again and the change planned again from the lake, so nothing a concurrent writer did is lost.

Schema evolution is by name: a new attribute adds a column and a decimal column whose precision
grows widens, in the table's metadata only (old files are read through the name mapping and
promoted). A change Iceberg cannot express in place (int64 -> decimal, or a column that becomes
text because its type is mixed) replaces the column: in ``current`` every bucket is then
published again; in ``snapshot`` the partitions written with the old type leave the table in the
same commit (their files stay in the lake, and earlier Iceberg snapshots still read them).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dynamo_cdc.config import dagster_safe_name
from dynamo_cdc.layout import hour_of_path, snapshot_dates, snapshot_path

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table as IcebergTable

    from dynamo_cdc.lake import Lake

log = logging.getLogger(__name__)

VIEWS = ("snapshot", "changes", "current")
DEFAULT_NAMESPACE = "dynamo_cdc"
CATALOG_FILE = "_iceberg/catalog.db"
EXPORT_DATE_COLUMN = "export_date"
CHANGE_HOUR_FIELD = "change_hour"
MAX_COMMIT_ATTEMPTS = 20
#: Snapshot summary properties that record what the ``current`` table was published from.
MIRROR_VERSION_PROPERTY = "dynamo-cdc.mirror-version"
MIRROR_SNAPSHOT_PROPERTY = "dynamo-cdc.mirror-snapshot"
MIRROR_BUCKETS_PROPERTY = "dynamo-cdc.mirror-buckets"


@dataclass
class IcebergSettings:
    """Which catalog holds the lake's Iceberg tables (environment variables, read when called).

    Attributes:
        kind: ``sql`` (SQLite in the lake root, the default), ``glue``, ``rest`` or ``off``.
        namespace: the Iceberg namespace (a Glue database).
        properties: extra pyiceberg catalog properties (``uri`` for REST, ``warehouse``, ...).
        publish_seconds: the least time between two publishes of ``current`` (0: every refresh).
        keep_seconds: how long a replaced Iceberg snapshot of each table stays (then it
            expires) and, for ``current``, its bucket files: time travel reaches back that far,
            and a reader that planned its scan before a publish still finds its files.
    """

    kind: str = "sql"
    namespace: str = DEFAULT_NAMESPACE
    properties: dict[str, str] = field(default_factory=dict)
    publish_seconds: float = 0.0
    keep_seconds: float = 3600.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> IcebergSettings:
        env = dict(os.environ if env is None else env)
        kind = env.get("DYNAMO_CDC_ICEBERG", "sql").strip().lower() or "sql"
        if kind not in ("sql", "glue", "rest", "off"):
            raise ValueError(
                f"DYNAMO_CDC_ICEBERG={kind!r} is not a catalog kind: use sql, glue, rest or off."
            )
        props = {}
        if env.get("DYNAMO_CDC_ICEBERG_URI"):
            props["uri"] = env["DYNAMO_CDC_ICEBERG_URI"]
        if env.get("DYNAMO_CDC_ICEBERG_WAREHOUSE"):
            props["warehouse"] = env["DYNAMO_CDC_ICEBERG_WAREHOUSE"]
        return cls(
            kind=kind,
            namespace=env.get("DYNAMO_CDC_ICEBERG_NAMESPACE", DEFAULT_NAMESPACE),
            properties=props,
            publish_seconds=float(env.get("DYNAMO_CDC_ICEBERG_PUBLISH_SECONDS", "0") or 0),
            keep_seconds=float(env.get("DYNAMO_CDC_ICEBERG_KEEP_SECONDS", "3600") or 3600),
        )


class CatalogConflict(Exception):
    """Another writer committed first (retried)."""


def table_name(table: str, view: str) -> str:
    """The Iceberg table name of a view of a DynamoDB table (``<safe>_<view>``)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, not {view!r}")
    return f"{dagster_safe_name(table)}_{view}"


def identifier(table: str, view: str, settings: IcebergSettings | None = None) -> tuple[str, str]:
    """(namespace, name) of a view's Iceberg table."""
    settings = settings or IcebergSettings.from_env()
    return (settings.namespace, table_name(table, view))


def table_location(lake: Lake, table: str, view: str) -> str:
    """Where a view's Iceberg metadata lives: ``<root>/<t>/_iceberg/<view>``."""
    return _file_uri(lake, lake.table_path(table, "_iceberg", view))


def _file_uri(lake: Lake, rel: str) -> str:
    uri = lake.uri(rel)
    return uri if lake.is_s3 else f"file://{uri}"


def _io_properties(lake: Lake) -> dict[str, str]:
    """pyiceberg FileIO properties that reach the lake (S3 endpoint and credentials)."""
    if not lake.is_s3:
        return {}
    client = lake.s3_client
    props = {"s3.region": client.meta.region_name or "us-east-1"}
    endpoint = client.meta.endpoint_url
    if endpoint and "amazonaws.com" not in endpoint:
        props["s3.endpoint"] = endpoint
    frozen = lake.s3_credentials()
    if frozen:
        props["s3.access-key-id"] = frozen.access_key
        props["s3.secret-access-key"] = frozen.secret_key
        if frozen.token:
            props["s3.session-token"] = frozen.token
    return props


# -- opening the catalog ---------------------------------------------------------------------


@contextlib.contextmanager
def open_catalog(
    lake: Lake, settings: IcebergSettings | None = None, *, write: bool = False
) -> Iterator[Catalog]:
    """The lake's Iceberg catalog (see the module docstring).

    Args:
        lake: the lake.
        settings: which catalog (default: from the environment).
        write: on an ``s3://`` root with the SQLite catalog, upload the database at the end
            (conditionally: :class:`CatalogConflict` when another writer uploaded first).
    """
    from pyiceberg.catalog import load_catalog

    settings = settings or IcebergSettings.from_env()
    props = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO", **_io_properties(lake)}
    if settings.kind == "glue":
        props.update(_glue_properties(lake))
        props.update(settings.properties)
        yield load_catalog("dynamo_cdc", **{"type": "glue", **props})
        return
    if settings.kind == "rest":
        yield load_catalog("dynamo_cdc", **{"type": "rest", **props, **settings.properties})
        return
    if settings.kind == "off":
        raise ValueError("the Iceberg catalog is off (DYNAMO_CDC_ICEBERG=off)")
    warehouse = settings.properties.get("warehouse", _file_uri(lake, ""))
    if not lake.is_s3:
        path = Path(lake.uri(CATALOG_FILE))
        path.parent.mkdir(parents=True, exist_ok=True)
        catalog = _sql_catalog(f"sqlite:///{path}", warehouse, props)
        try:
            yield catalog
        finally:
            catalog.engine.dispose()
        return
    with tempfile.TemporaryDirectory(prefix="dynamo-cdc-iceberg-") as tmp:
        path = Path(tmp) / "catalog.db"
        etag = _download_catalog(lake, path)
        before = path.read_bytes() if path.exists() else b""
        catalog = _sql_catalog(f"sqlite:///{path}", warehouse, props)
        try:
            yield catalog
        finally:
            catalog.engine.dispose()
        if write and path.read_bytes() != before:
            _upload_catalog(lake, path, etag)


def _sql_catalog(uri: str, warehouse: str, props: dict[str, str]) -> Any:
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog("dynamo_cdc", **{"uri": uri, "warehouse": warehouse, **props})


def _glue_properties(lake: Lake) -> dict[str, str]:
    """Glue client properties from the project's settings (endpoint, region, credentials)."""
    from dynamo_cdc.config import Settings

    s = Settings.from_env()
    props = {"glue.region": s.region or "us-east-1"}
    if s.endpoint_url:
        props["glue.endpoint"] = s.endpoint_url
    if s.access_key_id and s.secret_access_key:
        props["glue.access-key-id"] = s.access_key_id
        props["glue.secret-access-key"] = s.secret_access_key
        if s.session_token:
            props["glue.session-token"] = s.session_token
    return props


def _download_catalog(lake: Lake, path: Path) -> str | None:
    from botocore.exceptions import ClientError

    try:
        obj = lake.s3_client.get_object(Bucket=lake.bucket, Key=lake.key(CATALOG_FILE))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    path.write_bytes(obj["Body"].read())
    return str(obj["ETag"])


def _upload_catalog(lake: Lake, path: Path, etag: str | None) -> None:
    from botocore.exceptions import ClientError

    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        lake.s3_client.put_object(
            Bucket=lake.bucket, Key=lake.key(CATALOG_FILE), Body=path.read_bytes(), **condition
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
            raise CatalogConflict(f"{lake.uri(CATALOG_FILE)} changed meanwhile") from None
        raise


def _conflicts() -> tuple[type[BaseException], ...]:
    from pyiceberg.exceptions import (
        CommitFailedException,
        TableAlreadyExistsError,
        ValidationException,
    )
    from sqlalchemy.exc import IntegrityError, OperationalError

    return (
        CatalogConflict,
        CommitFailedException,
        TableAlreadyExistsError,
        ValidationException,  # pyiceberg's own retry found the other writer's files
        IntegrityError,
        OperationalError,  # SQLite: "database is locked" while another process commits
    )


def with_catalog(
    lake: Lake,
    fn: Callable[[Catalog], Any],
    settings: IcebergSettings | None = None,
    *,
    attempts: int = MAX_COMMIT_ATTEMPTS,
) -> Any:
    """Run ``fn(catalog)``, again from the start when another writer committed first.

    ``fn`` must plan its change from what it loads (the table, the lake), so a retry plans it
    again on top of the other writer's commit.
    """
    conflicts = _conflicts()
    for attempt in range(attempts):
        try:
            with open_catalog(lake, settings, write=True) as catalog:
                return fn(catalog)
        except conflicts as exc:
            if attempt == attempts - 1:
                raise
            log.info("Iceberg commit conflict (%s); retrying", type(exc).__name__)
            time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


# -- tables ------------------------------------------------------------------------------------


def _iceberg_arrow_schema(arrow: pa.Schema) -> pa.Schema:
    """The columns Iceberg can type: null-typed columns (an attribute that was only ever NULL)
    have no Iceberg type and stay out (``_item`` holds them)."""
    return pa.schema([f.remove_metadata() for f in arrow if not pa.types.is_null(f.type)])


def _ensure_table(
    catalog: Catalog,
    ident: tuple[str, str],
    location: str,
    arrow: pa.Schema,
    partition: Callable[[Any], None] | None = None,
) -> IcebergTable:
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return catalog.load_table(ident)
    except NoSuchTableError:
        pass
    catalog.create_namespace_if_not_exists(ident[0])
    from pyiceberg.table import TableProperties

    schema = _iceberg_arrow_schema(arrow)
    tbl = catalog.create_table(
        ident,
        schema=schema,
        location=location,
        properties={
            TableProperties.PARQUET_COMPRESSION: "zstd",
            # a commit that lost is retried by with_catalog, which plans it again from the lake;
            # pyiceberg's own retry would commit the same (stale) plan again
            TableProperties.COMMIT_NUM_RETRIES: "0",
            "dynamo-cdc.view": ident[1].rsplit("_", 1)[1],
        },
    )
    with tbl.transaction() as tx:
        tx.set_properties(
            {TableProperties.DEFAULT_NAME_MAPPING: tbl.schema().name_mapping.model_dump_json()}
        )
        if partition is not None:
            with tx.update_spec() as spec:
                partition(spec)
    return catalog.load_table(ident)


def _evolve(tx: Any, arrow: pa.Schema) -> list[str]:
    """Evolve the table's schema by name to take ``arrow``; returns the columns whose type
    Iceberg cannot change in place (they are replaced: dropped, then added again)."""
    from pyiceberg.exceptions import ValidationError
    from pyiceberg.io.pyarrow import _ConvertToIcebergWithoutIDs, visit_pyarrow

    wanted = _iceberg_arrow_schema(arrow)
    current = tx.table_metadata.schema()
    replaced = []
    for f in wanted:
        try:
            old = current.find_field(f.name)
        except ValueError:
            continue
        new_type = visit_pyarrow(f.type, _ConvertToIcebergWithoutIDs())
        if old.field_type == new_type:
            continue
        try:
            with tx.update_schema() as probe:
                probe.update_column(f.name, field_type=new_type)
        except (ValidationError, ValueError, TypeError):
            replaced.append(f.name)
    if replaced:
        with tx.update_schema() as upd:
            for name in replaced:
                upd.delete_column(name)
    with tx.update_schema() as upd:
        upd.union_by_name(wanted)
    return replaced


def _live_files(tbl: IcebergTable) -> list[Any]:
    """The data files of the table's current snapshot."""
    snap = tbl.current_snapshot()
    if snap is None:
        return []
    out: list[Any] = []
    for manifest in snap.manifests(tbl.io):
        out.extend(e.data_file for e in manifest.fetch_manifest_entry(tbl.io, discard_deleted=True))
    return out


def _data_file(tbl_metadata: Any, fileio: Any, path: str, partition: tuple[Any, ...]) -> Any:
    """An Iceberg DataFile for a Parquet file we wrote (statistics from its footer)."""
    import pyarrow.parquet as pq
    from pyiceberg.io.pyarrow import (
        MetricModeTypes,
        MetricsMode,
        StatisticsCollector,
        compute_statistics_plan,
        data_file_statistics_from_parquet_metadata,
        parquet_path_to_id_mapping,
    )
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    from pyiceberg.typedef import Record
    from pyiceberg.types import StringType

    input_file = fileio.new_input(path)
    with input_file.open() as stream:
        meta = pq.read_metadata(stream)
    schema = tbl_metadata.schema()
    mapping = parquet_path_to_id_mapping(schema)
    plan = compute_statistics_plan(schema, tbl_metadata.properties)
    # Columns of the file the table does not have (an attribute that was only ever NULL, a
    # column replaced since): counted under a placeholder id, then left out.
    unknown = -1
    for i in range(meta.num_columns):
        path_in_schema = meta.schema.column(i).path
        if path_in_schema not in mapping:
            mapping[path_in_schema] = unknown
    plan[unknown] = StatisticsCollector(
        field_id=unknown,
        iceberg_type=StringType(),
        mode=MetricsMode(MetricModeTypes.NONE),
        column_name="",
    )
    stats = data_file_statistics_from_parquet_metadata(
        parquet_metadata=meta, stats_columns=plan, parquet_column_mapping=mapping
    )
    stats.column_sizes.pop(unknown, None)
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=Record(*partition),
        file_size_in_bytes=len(input_file),
        sort_order_id=None,
        spec_id=tbl_metadata.default_spec_id,
        equality_ids=None,
        key_metadata=None,
        **stats.to_serialized_dict(),
    )


def _commit_files(
    tx: Any, tbl: IcebergTable, remove: Sequence[Any], add: Sequence[str], partition_of: Any
) -> None:
    """One snapshot that removes ``remove`` (DataFiles) and adds the files ``add`` (paths)."""
    if not remove and not add:
        return
    with tx.update_snapshot().overwrite() as ow:
        for df in remove:
            ow.delete_data_file(df)
        for path in add:
            ow.append_data_file(_data_file(tx.table_metadata, tbl.io, path, partition_of(path)))


# -- snapshot and changes ------------------------------------------------------------------


@dataclass
class PublishResult:
    """What one publish to the catalog did.

    Attributes:
        table: the DynamoDB table.
        view: ``snapshot``, ``changes`` or ``current``.
        identifier: the Iceberg table (``namespace.name``).
        snapshot_id: the Iceberg snapshot readers now see (None: the table is empty).
        files_added: data files registered (or, for ``current``, written).
        files_removed: data files that left the table.
        bytes_written: bytes of Parquet written (0 for ``snapshot`` and ``changes``: their
            files are registered as they are).
        buckets: ``current`` only: the buckets published.
        replaced_columns: columns whose type Iceberg could not change in place.
        attempts: commits tried (more than 1: another writer committed first).
    """

    table: str
    view: str
    identifier: str
    snapshot_id: int | None
    files_added: int = 0
    files_removed: int = 0
    bytes_written: int = 0
    buckets: list[int] = field(default_factory=list)
    replaced_columns: list[str] = field(default_factory=list)
    attempts: int = 1


def _arrow_schema_of(lake: Lake, rel: str) -> pa.Schema:
    import pyarrow.parquet as pq

    fs, base = lake.arrow_filesystem()
    return pq.read_schema(f"{base}/{rel}", filesystem=fs)


def _listing(lake: Lake, rel: str) -> dict[str, tuple[int, float]]:
    """Files under ``rel``: relative path -> (size, last modified in epoch seconds)."""
    if not lake.is_s3:
        out = {}
        for r in lake.list(rel):
            st = lake.local_path(r).stat()
            out[r] = (st.st_size, st.st_mtime)
        return out
    out = {}
    prefix = lake.key(rel).rstrip("/") + "/"
    cut = len(lake.prefix) + 1 if lake.prefix else 0
    for page in lake.s3_client.get_paginator("list_objects_v2").paginate(
        Bucket=lake.bucket, Prefix=prefix
    ):
        for obj in page.get("Contents", []):
            out[obj["Key"][cut:]] = (int(obj["Size"]), obj["LastModified"].timestamp())
    return out


def _lake_files(lake: Lake, rel: str) -> dict[str, int]:
    """Parquet data files under ``rel``: relative path -> size."""
    return {r: size for r, (size, _) in _listing(lake, rel).items() if _is_data(r)}


def _is_data(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(".parquet") and name[0] not in "_."


def _rel_of(lake: Lake, path: str) -> str:
    base = _file_uri(lake, "").rstrip("/") + "/"
    return path[len(base) :] if path.startswith(base) else path


def publish_snapshot(
    lake: Lake, table: str, export_date: str, settings: IcebergSettings | None = None
) -> PublishResult:
    """Make the ``snapshot`` Iceberg table's partition ``export_date`` hold exactly the files of
    the lake's snapshot partition (one commit; the files are registered, not rewritten)."""

    rel = snapshot_path(lake, table, export_date)
    files = sorted(_lake_files(lake, rel))
    if not files:
        raise FileNotFoundError(f"No snapshot files under {lake.uri(rel)}")
    arrow = _arrow_schema_of(lake, files[0])
    date_column = EXPORT_DATE_COLUMN if EXPORT_DATE_COLUMN not in arrow.names else "_export_date"
    arrow = arrow.append(pa.field(date_column, pa.string()))
    ident = identifier(table, "snapshot", settings)
    attempts = [0]

    def publish(catalog: Catalog) -> PublishResult:
        from pyiceberg.transforms import IdentityTransform

        attempts[0] += 1
        tbl = _ensure_table(
            catalog,
            ident,
            table_location(lake, table, "snapshot"),
            arrow,
            lambda spec: spec.add_field(date_column, IdentityTransform(), date_column),
        )
        live = _live_files(tbl)
        with tbl.transaction() as tx:
            replaced = _evolve(tx, arrow)
            remove = [
                df
                for df in live
                if replaced or df.partition[0] == export_date  # older types cannot stay
            ]
            _commit_files(
                tx,
                tbl,
                remove,
                [_file_uri(lake, f) for f in files],
                lambda path: (export_date,),
            )
        return _result(
            _expire_snapshots(catalog.load_table(ident), _keep_seconds(settings)),
            table,
            "snapshot",
            files_added=len(files),
            files_removed=len(remove),
            replaced_columns=replaced,
            attempts=attempts[0],
        )

    return with_catalog(lake, publish, settings)  # type: ignore[no-any-return]


def _result(tbl: IcebergTable, table: str, view: str, **what: Any) -> PublishResult:
    snap = tbl.current_snapshot()
    return PublishResult(
        table, view, ".".join(tbl.name()), snap.snapshot_id if snap else None, **what
    )


def _hour_of_partition(rel: str) -> int:
    """Hours since the epoch of a change file's ``date=YYYY-MM-DD/hour=HH`` folders (named per
    table: :mod:`dynamo_cdc.layout`)."""
    when = hour_of_path(rel)
    if when is None:
        raise ValueError(f"{rel!r} is not in an hour partition of changes")
    return int(when.timestamp()) // 3600


def publish_changes(
    lake: Lake,
    table: str,
    partitions: Sequence[str] | None = None,
    settings: IcebergSettings | None = None,
) -> PublishResult:
    """Make the ``changes`` Iceberg table hold exactly the lake's change files (of
    ``partitions``, relative ``<t>/changes/date=.../hour=...`` folders, or of every hour).

    Files that appeared are registered, files that are gone (compacted) or were replaced under
    the same name (their size differs) leave the table, all in one commit; nothing is
    committed when the table already matches the lake.
    """
    prefix = lake.table_path(table, "changes")
    scopes = sorted(set(partitions)) if partitions else [prefix]
    ident = identifier(table, "changes", settings)
    attempts = [0]

    def publish(catalog: Catalog) -> PublishResult:
        from pyiceberg.exceptions import NoSuchTableError
        from pyiceberg.transforms import HourTransform

        attempts[0] += 1
        try:
            tbl = catalog.load_table(ident)
        except NoSuchTableError:
            tbl = None
        # The lake is listed after the table is loaded: every file registered then was written
        # before, so a file missing from this listing is really gone (a concurrent writer's new
        # file is never taken for a deleted one).
        present: dict[str, int] = {}
        for scope in scopes:
            present.update(_lake_files(lake, scope))
        if tbl is None:
            if not present:
                return PublishResult(table, "changes", ".".join(ident), None, attempts=attempts[0])
            tbl = _ensure_table(
                catalog,
                ident,
                table_location(lake, table, "changes"),
                _arrow_schema_of(lake, sorted(present)[0]),
                lambda spec: spec.add_field(
                    "approximate_creation_time", HourTransform(), CHANGE_HOUR_FIELD
                ),
            )
        registered = {}
        for df in _live_files(tbl):
            rel = _rel_of(lake, df.file_path)
            if any(rel.startswith(s.rstrip("/") + "/") for s in scopes):
                registered[rel] = df
        remove = [df for rel, df in registered.items() if present.get(rel) != df.file_size_in_bytes]
        add = [
            rel
            for rel, size in sorted(present.items())
            if rel not in registered or registered[rel].file_size_in_bytes != size
        ]
        if remove or add:
            with tbl.transaction() as tx:
                if add:
                    _evolve(tx, _arrow_schema_of(lake, add[0]))
                _commit_files(
                    tx,
                    tbl,
                    remove,
                    [_file_uri(lake, r) for r in add],
                    lambda path: (_hour_of_partition(_rel_of(lake, path)),),
                )
            tbl = catalog.load_table(ident)
        return _result(
            _expire_snapshots(tbl, _keep_seconds(settings)),
            table,
            "changes",
            files_added=len(add),
            files_removed=len(remove),
            attempts=attempts[0],
        )

    return with_catalog(lake, publish, settings)  # type: ignore[no-any-return]


# -- current --------------------------------------------------------------------------------


def _current_data_rel(lake: Lake, table: str, bucket: int, version: int, token: str) -> str:
    return lake.table_path(
        table, "_iceberg", "current", "data", f"bucket-{bucket:04d}-v{version:06d}-{token}.parquet"
    )


def _bucket_of_path(path: str) -> int:
    name = path.rsplit("/", 1)[-1]
    return int(name.split("-", 2)[1])


def changed_buckets(
    lake: Lake, table: str, state: dict[str, Any], since_version: int | None
) -> set[int]:
    """Buckets of the mirror's version ``state`` that changed after version ``since_version``:
    base files written later, and buckets of delta rows written later."""
    import pyarrow.compute as pc

    from dynamo_cdc import mirror

    base_files = {int(b): rel for b, rel in state["base_files"].items()}
    if since_version is None or "base_versions" not in state:
        return set(base_files)
    versions = {int(b): int(v) for b, v in state["base_versions"].items()}
    out = {b for b in base_files if versions.get(b, state["version"]) > since_version}
    fresh = [
        mirror.current_path(lake, table, rel)
        for rel in state.get("deltas", [])
        if int(rel.rsplit("/", 1)[1].split("-")[1]) > since_version
    ]
    if fresh:
        rows = mirror.read_files(lake, fresh, ["_bucket"])
        out |= set(pc.unique(rows.column("_bucket")).to_pylist())
    return out


def _bucket_rows(
    lake: Lake, table: str, state: dict[str, Any], schema_: pa.Schema, bucket: int
) -> pa.Table:
    """The live rows of one bucket of the mirror's version (newest per key, no tombstones)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from dynamo_cdc import mirror

    parts = [
        mirror.cast_rows(
            mirror.read_files(
                lake, [mirror.current_path(lake, table, state["base_files"][str(bucket)])]
            ),
            schema_,
        )
    ]
    deltas = [mirror.current_path(lake, table, rel) for rel in state.get("deltas", [])]
    if deltas:
        fs, base = lake.arrow_filesystem()
        found = ds.dataset([f"{base}/{r}" for r in deltas], filesystem=fs, format="parquet")
        rows = found.to_table(filter=ds.field("_bucket") == bucket)
        parts.append(mirror.cast_rows(rows.select(schema_.names).cast(schema_), schema_))
        rows = mirror.newest_per_key(pa.concat_tables(parts))
    else:
        rows = parts[0]
    rows = rows.filter(pc.invert(rows.column("_deleted"))).sort_by("_key")
    return rows.select(current_schema(schema_).names)


def current_schema(mirror_schema: pa.Schema) -> pa.Schema:
    """The columns of the ``current`` Iceberg table: the mirror's, less its internal ones and
    columns of nulls (no Iceberg type before format 3; ``_item`` holds them)."""
    from dynamo_cdc import mirror

    return _iceberg_arrow_schema(
        pa.schema([f for f in mirror_schema if f.name not in mirror.INTERNAL_COLUMNS])
    )


def _snapshot_tag(pointer: dict[str, Any]) -> str:
    """What the mirror's version starts from (its snapshot and the build of the mirror from it),
    as a snapshot summary value."""
    text = repr(sorted(pointer["snapshot"].items())) + pointer.get("rebuild_id", "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _published_from(summary: dict[str, str], pointer: dict[str, Any]) -> bool:
    """Whether a ``current`` snapshot summary was published from the same snapshot and bucket
    count as the mirror's version ``pointer`` (then its mirror version is comparable)."""
    return summary.get(MIRROR_SNAPSHOT_PROPERTY) == _snapshot_tag(pointer) and summary.get(
        MIRROR_BUCKETS_PROPERTY
    ) == str(pointer["buckets"])


def read_published_current(
    lake: Lake, table: str, pointer: dict[str, Any], settings: IcebergSettings | None = None
) -> pa.Table | None:
    """The rows of the ``current`` Iceberg table when its head was published from the mirror's
    version ``pointer`` (a plain scan: no merge), in the columns and types
    :func:`dynamo_cdc.mirror.read_current` returns; None when the catalog is off, the table
    lags behind the mirror, or cannot be read (the caller then reads the mirror)."""
    from dynamo_cdc import mirror

    settings = settings or IcebergSettings.from_env()
    if settings.kind == "off":
        return None
    try:
        tbl = load_table(lake, table, "current", settings)
        snap = tbl.current_snapshot()
        summary = snap.summary.additional_properties if snap and snap.summary else {}
        if not (
            _published_from(summary, pointer)
            and summary.get(MIRROR_VERSION_PROPERTY) == str(pointer["version"])
        ):
            return None
        rows = tbl.scan(snapshot_id=snap.snapshot_id if snap else None).to_arrow()
    except Exception as exc:  # the mirror holds the same rows
        log.info("%s: reading the mirror (the Iceberg current table: %s)", table, exc)
        return None
    wanted = pa.schema(
        [
            f
            for f in mirror.schema_from_json(pointer["schema"])
            if f.name not in mirror.INTERNAL_COLUMNS
        ]
    )
    arrays = [
        rows.column(f.name).cast(f.type)
        if f.name in rows.column_names
        else pa.nulls(rows.num_rows, f.type)  # a column of nulls has no Iceberg type
        for f in wanted
    ]
    return pa.Table.from_arrays(arrays, schema=wanted)


def publish_current(
    lake: Lake, table: str, settings: IcebergSettings | None = None, *, force: bool = False
) -> PublishResult:
    """Publish the mirror's version as the plain ``current`` Iceberg table.

    Only the buckets that changed since the version published last are written (one file
    each); their old files leave the table in the same overwrite commit. A new snapshot, another
    bucket count, or a column whose type Iceberg cannot change in place publishes every bucket.

    Raises:
        FileNotFoundError: the mirror was never refreshed.
    """
    from dynamo_cdc import mirror

    pointer = mirror.load_pointer(lake, table)
    if pointer is None:
        raise FileNotFoundError(
            f"No current view of {table!r}: refresh it (dynamo_cdc.mirror.refresh_current) first."
        )
    state = mirror.load_state(lake, table, pointer)
    if state is None:
        raise FileNotFoundError(f"The current view of {table!r} has no state file.")
    mirror_schema = mirror.schema_from_json(pointer["schema"])
    arrow = current_schema(mirror_schema)
    version = int(pointer["version"])
    snap_text = _snapshot_tag(pointer)
    ident = identifier(table, "current", settings)
    written: dict[int, tuple[str, int]] = {}  # bucket -> (rel, bytes), kept across retries
    attempts = [0]

    def publish(catalog: Catalog) -> PublishResult:
        attempts[0] += 1
        tbl = _ensure_table(catalog, ident, table_location(lake, table, "current"), arrow)
        snap = tbl.current_snapshot()
        summary = snap.summary.additional_properties if snap and snap.summary else {}
        same_base = _published_from(summary, pointer)
        since = int(summary[MIRROR_VERSION_PROPERTY]) if same_base else None
        if since is not None and since >= version and not force:
            return PublishResult(
                table,
                "current",
                ".".join(ident),
                snap.snapshot_id if snap else None,
                attempts=attempts[0],
            )
        with tbl.transaction() as tx:
            replaced = _evolve(tx, arrow)
            buckets = set(range(int(pointer["buckets"])))
            if not replaced and not force:
                buckets = changed_buckets(lake, table, state, since)
            live = _live_files(tbl)
            remove = [
                df
                for df in live
                if replaced or not same_base or _bucket_of_path(df.file_path) in buckets
            ]
            add = []
            for b in sorted(buckets):
                if b not in written:
                    rows = _bucket_rows(lake, table, state, mirror_schema, b)
                    data = _parquet_bytes(rows)
                    rel = _current_data_rel(lake, table, b, version, os.urandom(4).hex())
                    lake.write_bytes(rel, data)
                    written[b] = (rel, len(data))
                add.append(_file_uri(lake, written[b][0]))
            tx_props = {
                MIRROR_VERSION_PROPERTY: str(version),
                MIRROR_SNAPSHOT_PROPERTY: snap_text,
                MIRROR_BUCKETS_PROPERTY: str(pointer["buckets"]),
            }
            with tx.update_snapshot(snapshot_properties=tx_props).overwrite() as ow:
                for df in remove:
                    ow.delete_data_file(df)
                for path in add:
                    ow.append_data_file(_data_file(tx.table_metadata, tbl.io, path, ()))
        tbl = catalog.load_table(ident)
        now = tbl.current_snapshot()
        _expire_current(lake, table, tbl, _keep_seconds(settings))
        return PublishResult(
            table,
            "current",
            ".".join(ident),
            now.snapshot_id if now else None,
            files_added=len(add),
            files_removed=len(remove),
            bytes_written=sum(written[b][1] for b in buckets),
            buckets=sorted(buckets),
            replaced_columns=replaced,
            attempts=attempts[0],
        )

    return with_catalog(lake, publish, settings)  # type: ignore[no-any-return]


def _keep_seconds(settings: IcebergSettings | None) -> float:
    return (settings or IcebergSettings.from_env()).keep_seconds


def _expire_snapshots(tbl: IcebergTable, keep_seconds: float) -> IcebergTable:
    """Expire the table's snapshots replaced more than ``keep_seconds`` ago (metadata only: no
    data file is deleted); returns the table as it is now."""
    cutoff_ms = (time.time() - keep_seconds) * 1000
    head = tbl.current_snapshot()
    old = [
        s.snapshot_id
        for s in tbl.snapshots()
        if s.timestamp_ms < cutoff_ms and head is not None and s.snapshot_id != head.snapshot_id
    ]
    if old:
        tbl.maintenance.expire_snapshots().by_ids(old).commit()
        tbl.refresh()
    return tbl


def _expire_current(lake: Lake, table: str, tbl: IcebergTable, keep_seconds: float) -> None:
    """Expire snapshots of ``current`` replaced more than ``keep_seconds`` ago, then delete the
    bucket files no remaining snapshot names and older than that (a file written by a publish
    that has not committed yet is younger: it stays)."""
    cutoff_ms = (time.time() - keep_seconds) * 1000
    tbl = _expire_snapshots(tbl, keep_seconds)
    named: set[str] = set()
    for snap in tbl.snapshots():
        for manifest in snap.manifests(tbl.io):
            named.update(
                e.data_file.file_path
                for e in manifest.fetch_manifest_entry(tbl.io, discard_deleted=True)
            )
    data = lake.table_path(table, "_iceberg", "current", "data")
    for rel, (_, modified) in _listing(lake, data).items():
        if _file_uri(lake, rel) not in named and modified * 1000 < cutoff_ms:
            lake.delete(rel)


def _parquet_bytes(rows: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(rows, buf, compression="zstd")
    return buf.getvalue()


# -- reading ------------------------------------------------------------------------------------


def load_table(
    lake: Lake, table: str, view: str, settings: IcebergSettings | None = None
) -> IcebergTable:
    """The pyiceberg Table of a view (for scans: ``.scan().to_arrow()``, time travel:
    ``.scan(snapshot_id=...)``)."""
    with open_catalog(lake, settings) as catalog:
        return catalog.load_table(identifier(table, view, settings))


# -- the hook the writers call ------------------------------------------------------------------


def lake_changed(
    lake: Lake,
    table: str,
    view: str,
    *,
    export_date: str | None = None,
    partitions: Sequence[str] | None = None,
) -> PublishResult | None:
    """Bring the view's Iceberg table up to date after the lake changed; never raises.

    The writers of the lake (snapshot publish, capture, compaction, heal, mirror refresh) call
    it after their own commit. A failure is logged, not raised: the Parquet data is committed
    and stays readable, and the next call (or :func:`publish_all`, which ``sync --once`` and
    the ``current`` asset run) reconciles the Iceberg table with the lake.
    """
    try:
        settings = IcebergSettings.from_env()
        if settings.kind == "off":
            return None
        if view == "snapshot" and export_date:
            return publish_snapshot(lake, table, export_date, settings)
        if view == "changes":
            return publish_changes(lake, table, partitions, settings)
        if view == "current":
            if settings.publish_seconds > 0 and _published_within(
                lake, table, settings, settings.publish_seconds
            ):
                return None
            return publish_current(lake, table, settings)
        return None
    except Exception as exc:  # the lake is committed; the next publish reconciles
        log.warning(
            "%s: the Iceberg %s table was not updated (%s: %s); the next publish retries",
            table,
            view,
            type(exc).__name__,
            exc,
        )
        return None


def _published_within(lake: Lake, table: str, settings: IcebergSettings, seconds: float) -> bool:
    try:
        tbl = load_table(lake, table, "current", settings)
    except Exception:
        return False
    snap = tbl.current_snapshot()
    return snap is not None and time.time() * 1000 - snap.timestamp_ms < seconds * 1000


def publish_all(
    lake: Lake, table: str, settings: IcebergSettings | None = None
) -> list[PublishResult]:
    """Reconcile every Iceberg table of ``table`` with the lake (raises on failure): every
    snapshot partition not registered yet, every change file, and ``current``."""
    from dynamo_cdc import mirror

    settings = settings or IcebergSettings.from_env()
    if settings.kind == "off":
        return []
    out = []
    dates = snapshot_dates(lake, table)
    registered = _registered_dates(lake, table, settings)
    for date in dates:
        if date not in registered:
            out.append(publish_snapshot(lake, table, date, settings))
    out.append(publish_changes(lake, table, None, settings))
    if mirror.load_pointer(lake, table) is not None:
        out.append(publish_current(lake, table, settings))
    return out


def publish_all_metadata(lake: Lake, table: str) -> dict[str, Any]:
    """:func:`publish_all`, summed up as asset metadata (``iceberg/<view>``: the Iceberg table
    and the snapshot readers now see; empty when the tables are off)."""
    out: dict[str, Any] = {}
    for r in publish_all(lake, table):
        out[f"iceberg/{r.view}"] = f"{r.identifier} @ {r.snapshot_id}"
        if r.view == "current":
            out["iceberg/current_bytes_written"] = r.bytes_written
            out["iceberg/current_buckets_written"] = len(r.buckets)
    return out


def _registered_dates(lake: Lake, table: str, settings: IcebergSettings) -> set[str]:
    try:
        tbl = load_table(lake, table, "snapshot", settings)
    except Exception:
        return set()
    return {str(df.partition[0]) for df in _live_files(tbl)}
