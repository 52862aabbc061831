"""``make demo`` / ``dynamo-cdc demo``: the whole pipeline on the embedded local AWS.

1. Start the local AWS (a child process on 127.0.0.1) with the demo tables ``orders`` and
   ``app-events.v1`` (streams NEW_AND_OLD_IMAGES, PITR on) and the export bucket.
2. Keep a seeded workload writing to both tables.
3. With ``--once``: run the pipeline headless once (snapshot, changes, current) through
   ``dynamo-cdc sync --once`` and exit. Otherwise start ``dagster dev`` with the sensors on and
   keep everything running until Ctrl-C; every process started here is stopped by its pid.

Everything lives under ``.demo/`` (Dagster home, table list, logs) and the lake under
``./lake`` unless told otherwise. A restart starts clean and says so (:func:`start_clean`): the
local AWS starts with new tables, so nothing of an earlier demo can be resumed. A busy UI port
is replaced by a free one (:func:`ui_port_to_use`) and the URL printed once it answers.

The demo never hands the user's AWS credentials to anything: its processes sign their requests
to the local AWS (plain HTTP) with the demo's own key (:data:`DEMO_ACCESS_KEY_ID`), every
``AWS_*`` and ``DYNAMO_CDC_AWS_*`` variable of the user's environment (keys, session token,
profile, credential and config files, container and web-identity credentials, endpoint
overrides) is left out of theirs, and the local AWS refuses any other access key id, so a
process that found real credentials somewhere would fail loudly instead of sending them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dynamo_cdc.aws import Clients
from dynamo_cdc.cli import duckdb_command
from dynamo_cdc.config import Settings
from dynamo_cdc.errors import DynamoCdcError
from dynamo_cdc.local import launch_local_aws
from dynamo_cdc.local.demo import DEMO_BUCKET, DEMO_TABLES
from dynamo_cdc.local.workload import Workload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workloads(clients: Clients) -> list[Workload]:
    out = []
    for seed, (name, spec) in enumerate(DEMO_TABLES.items()):
        keys = [k["AttributeName"] for k in spec["KeySchema"]]
        out.append(
            Workload(
                clients.dynamodb,
                name,
                keys[0],
                keys[1] if len(keys) > 1 else None,
                seed=seed,
                keys=200,
                ttl_attribute=spec.get("ttl_attribute"),
            )
        )
    return out


#: The demo's own credentials: the only ones its local AWS accepts.
DEMO_ACCESS_KEY_ID = "dynamo-cdc-demo"
DEMO_SECRET_ACCESS_KEY = "dynamo-cdc-demo-secret"
DEMO_REGION = "us-east-1"
#: Variables of the user's environment the demo's processes never see: every AWS setting
#: (credentials, profile, credential and config files, container and web-identity credentials,
#: endpoint overrides) and the credentials of dynamo-cdc's own settings.
USER_CREDENTIAL_PREFIXES = ("AWS_", "DYNAMO_CDC_AWS_")


def demo_base_env() -> dict[str, str]:
    """This process's environment without the user's AWS settings, with the demo's key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(USER_CREDENTIAL_PREFIXES)}
    env.update(
        AWS_ACCESS_KEY_ID=DEMO_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=DEMO_SECRET_ACCESS_KEY,
        AWS_DEFAULT_REGION=DEMO_REGION,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def demo_settings(endpoint_url: str) -> Settings:
    """Settings of the demo's own clients (its workload): the demo's key, never the user's."""
    return Settings(
        endpoint_url=endpoint_url,
        region=DEMO_REGION,
        access_key_id=DEMO_ACCESS_KEY_ID,
        secret_access_key=DEMO_SECRET_ACCESS_KEY,
    )


def demo_env(endpoint_url: str, lake_root: str, home: Path) -> dict[str, str]:
    """The environment of every process of the demo (see :func:`demo_base_env`)."""
    tables = home / "tables.csv"
    tables.write_text("".join(f"{name}\n" for name in DEMO_TABLES))
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    # pools of one step per table: runs writing one table's changes never overlap
    instance_yaml = Path(__file__).resolve().parent.parent / "dagster_project" / "dagster.yaml"
    if instance_yaml.exists():
        (dagster_home / "dagster.yaml").write_text(instance_yaml.read_text())
    return dict(
        demo_base_env(),
        DYNAMO_CDC_ENDPOINT_URL=endpoint_url,
        DYNAMO_CDC_TABLES=str(tables),
        DYNAMO_CDC_LAKE_ROOT=_lake_uri(lake_root),
        DYNAMO_CDC_EXPORT_BUCKET=DEMO_BUCKET,
        DAGSTER_HOME=str(dagster_home.resolve()),
    )


def ui_port_to_use(requested: int) -> int:
    """``requested`` when nothing listens there, else a free port (said on stdout): the URL the
    demo prints is always the one its own UI serves."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", requested))
            return requested
        except OSError:
            pass
    port = free_port()
    print(f"Port {requested} is busy (another program serves it): the Dagster UI uses {port}.")
    return port


LAKE_RECORD = "lake-root.txt"


def start_clean(home: Path, lake_root: Path) -> None:
    """Remove what an earlier demo left: its tables' folders in the lake and its Dagster home.

    The local AWS keeps its tables in memory, so every demo starts with new tables: resuming
    the earlier lake (its snapshot, checkpoints and ``current``) would mix in rows of tables
    that no longer exist. A demo table folder in a lake the demo did not write is left alone.

    Raises:
        DynamoCdcError: a demo table's folder exists in a lake no earlier demo wrote.
    """
    record = home / LAKE_RECORD
    earlier = record.read_text().strip() if record.exists() else None
    stale = [lake_root / t for t in DEMO_TABLES if (lake_root / t).exists()]
    if stale and earlier != str(lake_root):
        raise DynamoCdcError(
            f"{stale[0]} exists and no earlier demo wrote it; the demo will not overwrite it.",
            fix="pass --lake-root with an empty or new folder, or remove that folder.",
        )
    stale += [home / "dagster_home"] if (home / "dagster_home").exists() else []
    if stale:
        print(
            "Starting clean: the local AWS starts with new tables each time, so the earlier "
            f"demo cannot be resumed; removing {', '.join(str(p) for p in stale)}.",
            flush=True,
        )
        for path in stale:
            shutil.rmtree(path)
    else:
        print("Starting clean: no earlier demo here.", flush=True)
    home.mkdir(parents=True, exist_ok=True)
    record.write_text(f"{lake_root}\n")


def _lake_uri(lake_root: str) -> str:
    """``lake_root`` as every process of the demo sees it: an s3:// URI as it is, else the
    absolute path of the folder."""
    return lake_root if lake_root.startswith("s3://") else str(Path(lake_root).resolve())


def _create_lake_bucket(clients: Clients, lake_root: str) -> None:
    """On the demo's own local AWS, an s3:// lake's bucket is made (it starts empty)."""
    if lake_root.startswith("s3://"):
        bucket = lake_root[len("s3://") :].split("/", 1)[0]
        if bucket != DEMO_BUCKET:
            clients.s3.create_bucket(Bucket=bucket)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _restore_signals() -> None:
    # Background processes here may start with SIGINT/SIGTERM ignored (FACTS.md).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # dagster dev's code servers and in-flight run workers share its process group and can
    # outlive it by seconds (seen by bench.freshness): give them a moment, then kill the rest.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


#: The repository's example project (a ``defs.yaml`` of the component), in a source checkout.
EXAMPLE_PROJECT = Path(__file__).resolve().parent.parent / "dagster_project"


def code_location() -> tuple[str, str | None]:
    """The module the demo loads and its working directory: the example project in a source
    checkout (``make demo``), else the installed env-configured location."""
    if (EXAMPLE_PROJECT / "location.py").exists():
        return "dagster_project.location", str(EXAMPLE_PROJECT.parent)
    return "dynamo_cdc.dagster.definitions", None


def _workspace(home: Path) -> Path:
    """A workspace file loading :func:`code_location` (works from any folder)."""
    module, folder = code_location()
    path = home / "workspace.yaml"
    path.write_text(
        f"load_from:\n  - python_module:\n      module_name: {module}\n"
        + (f"      working_directory: {folder}\n" if folder else "")
        + "      location_name: dynamo_cdc\n"
    )
    return path


def _wait_for_ui(port: int, proc: subprocess.Popen[Any], timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise RuntimeError("dagster dev did not answer: see .demo/dagster.log")


def _dg() -> str:
    """The ``dg`` command installed beside this Python."""
    return str(Path(sys.executable).parent / "dg")


def run_demo(
    lake_root: str = "./lake",
    *,
    once: bool = False,
    home: str = ".demo",
    ui_port: int = 3000,
    warmup_operations: int = 300,
    writes_per_second: float = 5.0,
) -> int:
    """Run the demo; returns the process exit code."""
    # SIGTERM (a timeout, a service manager) stops the demo like Ctrl-C: children are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    home_path = Path(home).resolve()
    home_path.mkdir(parents=True, exist_ok=True)
    start_clean(home_path, Path(lake_root).resolve())
    if not once:
        ui_port = ui_port_to_use(ui_port)
    print("Starting the local AWS on 127.0.0.1 ...", flush=True)
    server = launch_local_aws(
        0,
        demo=True,
        stderr_path=str(home_path / "local-aws.log"),
        export_delay_seconds=1.0,
        access_key_id=DEMO_ACCESS_KEY_ID,
        env=demo_base_env(),
    )
    workloads: list[Workload] = []
    procs: list[subprocess.Popen[Any]] = []
    try:
        env = demo_env(server.endpoint_url, lake_root, home_path)
        clients = Clients(demo_settings(server.endpoint_url))
        _create_lake_bucket(clients, lake_root)
        print(
            f"Local AWS: {server.endpoint_url} (tables: {', '.join(DEMO_TABLES)}; access key id "
            f"{DEMO_ACCESS_KEY_ID}, secret {DEMO_SECRET_ACCESS_KEY})",
            flush=True,
        )
        workloads = _workloads(clients)
        for w in workloads:
            w.run(warmup_operations // len(workloads))
            w.run_in_background(writes_per_second)
        print(f"Workload: {writes_per_second:g} writes/s per table", flush=True)
        if once:
            cmd = [sys.executable, "-m", "dynamo_cdc.cli", "sync", "--once"]
            return subprocess.run(cmd, env=env, check=False).returncode
        # `dg dev` with a workspace file runs what `dagster dev` runs, which is superseded
        cmd = [
            _dg(),
            "dev",
            "-w",
            str(_workspace(home_path)),
            "-h",
            "127.0.0.1",
            "-p",
            str(ui_port),
        ]
        log = open(home_path / "dagster.log", "ab")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_restore_signals,
                start_new_session=True,
            )
        )
        print(f"Starting the Dagster UI (log: {home_path / 'dagster.log'}) ...", flush=True)
        _wait_for_ui(ui_port, procs[0])
        print(f"Dagster UI: http://127.0.0.1:{ui_port}", flush=True)
        print(
            "Sensors are capturing the streams; each asks for its table's first snapshot "
            "(a run), then current follows.",
            flush=True,
        )
        print(f"Lake: {_lake_uri(lake_root)}")
        changes = f"{_lake_uri(lake_root)}/orders/changes/*/*/*.parquet"
        sql = f"SELECT event_name, count(*) FROM read_parquet('{changes}') GROUP BY 1"
        print(f"Query:  {duckdb_command(sql)}")
        print("Ctrl-C stops everything.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for w in workloads:
            w.stop()
        for p in procs:
            _stop(p)
        server.stop()
