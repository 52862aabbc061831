"""Recognisable credentials (key id, secret and session token) reach nothing Dagster stores or
prints: not the event log, not the runs' captured logs, not materialization metadata, not the
daemon's and webserver's output, not the lake; with botocore's DEBUG logs captured into the
event log, with a run that fails, and with the lake on S3."""

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.helpers import REPO, VENV_BIN, wait_until
from tests.e2e.test_ui import _serve

pytestmark = pytest.mark.e2e

KEY_ID = "AKIASENTINEL00000001"
SECRET = "SECRET-sentinel-dagster-4e2a9c"
TOKEN = "TOKEN-sentinel-dagster-IQoJb3JpZ2lu/X2Vj+EHYaCXVz=="
CREDENTIALS = (KEY_ID, SECRET, TOKEN)
# A user who wants AWS requests in the event log: botocore and urllib3 at DEBUG, captured.
DEBUG_PYTHON_LOGS = """
python_logs:
  python_log_level: DEBUG
  managed_python_loggers:
    - botocore
    - urllib3
"""


def _secret_env(dagster_env: dict[str, str]) -> dict[str, str]:
    home = Path(dagster_env["DAGSTER_HOME"])
    with open(home / "dagster.yaml", "a") as f:
        f.write(DEBUG_PYTHON_LOGS)
    return dict(
        dagster_env,
        DYNAMO_CDC_AWS_ACCESS_KEY_ID=KEY_ID,
        DYNAMO_CDC_AWS_SECRET_ACCESS_KEY=SECRET,
        DYNAMO_CDC_AWS_SESSION_TOKEN=TOKEN,
    )


def _leaks(paths: list[Path], texts: dict[str, str]) -> list[tuple[str, str]]:
    found = [(where, c) for where, text in texts.items() for c in CREDENTIALS if c in text]
    for path in paths:
        data = path.read_bytes()
        found += [(str(path), c) for c in CREDENTIALS if c.encode() in data]
    return found


def _files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def _instance_storage(env: dict[str, str], scanned: list[Path]) -> bytes:
    """Everything the Dagster instance stored (runs, event log, schedules): the SQLite files in
    DAGSTER_HOME, or every row of every table of its PostgreSQL database, as text."""
    if "DAGSTER_PG_DB" not in env:
        dbs = [p for p in scanned if p.name.endswith(".db")]
        assert dbs  # the event log was really there
        return b"".join(p.read_bytes() for p in dbs)
    import psycopg2

    conn = psycopg2.connect(
        host=env["DAGSTER_PG_HOST"],
        port=env["DAGSTER_PG_PORT"],
        user=env["DAGSTER_PG_USERNAME"],
        password=env["DAGSTER_PG_PASSWORD"],
        dbname=env["DAGSTER_PG_DB"],
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = [row[0] for row in cur.fetchall()]
            assert "event_logs" in tables
            out = []
            for table in tables:
                cur.execute(f'SELECT t::text FROM "{table}" t')
                out += [row[0].encode() for row in cur.fetchall()]
    finally:
        conn.close()
    return b"\n".join(out)


def test_no_credential_in_the_event_log_run_logs_or_lake_of_a_good_and_a_failed_sync(
    dagster_env, tmp_path
):
    env = _secret_env(dagster_env)
    tables = tmp_path / "tables.csv"
    tables.write_text("orders\nno-such-table-4e2a9c\n")  # the second one's runs fail
    env["DYNAMO_CDC_TABLES"] = str(tables)
    run = subprocess.run(
        [sys.executable, "-m", "dynamo_cdc.dagster.sync", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 1, output[-3000:]
    assert "no-such-table-4e2a9c: FAILED" in output and "orders: ok" in output
    scanned = _files(Path(env["DAGSTER_HOME"]), Path(env["DYNAMO_CDC_LAKE_ROOT"]))
    assert any(p.suffix == ".parquet" for p in scanned)
    event_log = _instance_storage(env, scanned)
    assert b"X-Amz-Security-Token" in event_log  # botocore's DEBUG records were captured
    stored = event_log.decode("latin-1")
    assert _leaks(scanned, {"output": output, "instance storage": stored}) == []


def test_no_credential_in_the_daemons_webservers_or_runs_logs_with_an_s3_lake(
    dagster_env, clients, tmp_path
):
    env = _secret_env(dagster_env)
    lake_bucket = f"lake-{uuid.uuid4().hex[:12]}"
    clients.s3.create_bucket(Bucket=lake_bucket)
    env.update(
        DYNAMO_CDC_LAKE_ROOT=f"s3://{lake_bucket}/lake",
        DYNAMO_CDC_SENSOR_INTERVAL_SECONDS="5",
        DYNAMO_CDC_SENSOR_BUDGET_SECONDS="5",
    )
    log = tmp_path / "dagster-dev.log"
    command = [str(VENV_BIN / "dagster"), "dev", "-w", str(REPO / "workspace.yaml")]
    with _serve(command, env, log) as ui:
        clients.dynamodb.put_item(
            TableName="orders", Item={"customer_id": {"S": "c-9"}, "order_id": {"S": "o-9"}}
        )

        def a_sensor_run_succeeded() -> bool:
            runs = ui.graphql(
                "{ runsOrError(filter: {statuses: [SUCCESS]}) { ... on Runs { results { runId } } } }"
            )["runsOrError"]["results"]
            return bool(runs)

        wait_until(a_sensor_run_succeeded, timeout=300, interval=3, what="a sensor-launched run")
    keys = [
        o["Key"]
        for o in clients.s3.list_objects_v2(Bucket=lake_bucket, Prefix="lake/").get("Contents", [])
    ]
    assert any(k.endswith(".parquet") for k in keys)  # the lake really was the S3 one
    lake_texts = {
        k: clients.s3.get_object(Bucket=lake_bucket, Key=k)["Body"].read().decode("latin-1")
        for k in keys
    }
    scanned = _files(tmp_path)  # DAGSTER_HOME (event log, run and compute logs) and the log
    assert log in scanned and b"dagster-webserver" in log.read_bytes()
    stored = _instance_storage(env, scanned).decode("latin-1")
    assert _leaks(scanned, {**lake_texts, "instance storage": stored}) == []
