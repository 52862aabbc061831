"""The production instance (deploy/dagster.yaml) on a real PostgreSQL server: Dagster's standard
``postgres_db:`` form works with the pinned dependencies, runs and runless events are stored."""

from pathlib import Path

import dagster as dg
import pytest

pytestmark = pytest.mark.integration


def test_the_standard_postgres_db_form_stores_runs_and_runless_events(postgres_dagster_home: Path):
    """With SQLAlchemy 2.1 this fails: a plain postgresql:// URL (what ``postgres_db`` builds)
    means psycopg 3 there, which dagster-postgres does not install (and whose parameter binding
    Dagster's SQL breaks); pyproject pins ``sqlalchemy<2.1``."""
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    @dg.asset
    def one() -> int:
        return 1

    with dg.DagsterInstance.from_config(str(postgres_dagster_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        result = dg.materialize([one], instance=instance)
        assert result.success
        # what the stream sensor's asset events become (the daemon reports them like this)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="one", metadata={"batch_rows": 3})
        )
        events = instance.fetch_materializations(dg.AssetKey("one"), limit=10).records
        assert len(events) == 2
        assert {e.run_id for e in events} == {result.run_id, ""}
        assert instance.get_run_by_id(result.run_id).is_success
