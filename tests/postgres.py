"""A real PostgreSQL server for tests: Debian's PostgreSQL 15 binaries on 127.0.0.1.

The server refuses to run as root, so when the tests run as root every PostgreSQL command runs
as the ``postgres`` user (``runuser -u postgres --``), in a temporary folder under /tmp owned by
that user (pytest's own temporary folders are not reachable by it). The server listens on
127.0.0.1 and a free port only, with password authentication over TCP; it is stopped by its pid
(the first line of ``postmaster.pid``), and its folder removed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("DYNAMO_CDC_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
PASSWORD = "dynamo-cdc-test"
DATABASE = "dagster"


def missing_reason() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None."""
    for name in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / name).exists():
            return (
                f"PostgreSQL binaries not found in {PG_BIN} ({name}): install Debian's "
                "`postgresql` package (apt-get install -y postgresql)"
            )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root and there is no {PG_USER!r} user to run PostgreSQL as"
    return None


def _restore_signals() -> None:
    # Background processes here may start with SIGINT/SIGTERM ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class PostgresServer:
    """A running server: where to reach it and as whom."""

    host: str
    port: int
    username: str
    password: str
    db_name: str
    pid: int
    folder: Path

    @property
    def env(self) -> dict[str, str]:
        """The variables the production ``dagster.yaml`` reads (see deploy/dagster.yaml)."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.db_name,
        }

    def url(self, db_name: str | None = None) -> str:
        return (
            f"postgresql+psycopg2://{self.username}:{self.password}@{self.host}:{self.port}/"
            f"{db_name or self.db_name}"
        )

    def new_instance_env(self) -> dict[str, str]:
        """The ``DAGSTER_PG_*`` variables of a new empty database (a fresh Dagster instance)."""
        name = f"dagster_{uuid.uuid4().hex[:12]}"
        self.create_database(name)
        return {**self.env, "DAGSTER_PG_DB": name}

    def create_database(self, name: str) -> None:
        """A new empty database (one per test that needs a fresh Dagster instance)."""
        import psycopg2

        conn = psycopg2.connect(self.url("postgres").replace("+psycopg2", ""))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


def _as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str]) -> None:
    out = subprocess.run(
        _as_pg_user(cmd), capture_output=True, text=True, preexec_fn=_restore_signals
    )
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}")


@contextmanager
def postgres_server(timeout: float = 60.0) -> Iterator[PostgresServer]:
    """Start a PostgreSQL server in a new temporary folder; stop it by its pid afterwards."""
    reason = missing_reason()
    if reason:
        raise RuntimeError(reason)
    folder = Path(tempfile.mkdtemp(prefix="dynamo-cdc-pg-", dir="/tmp"))
    data, sockets, pwfile = folder / "data", folder / "sockets", folder / "pwfile"
    sockets.mkdir()
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        user = pwd.getpwnam(PG_USER)
        for path in (folder, sockets, pwfile):
            os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(folder, 0o700)
    pid = None
    try:
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        port = _free_port()
        options = f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off -c max_connections=200"
        _run(
            [
                str(PG_BIN / "pg_ctl"),
                "start",
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "server.log"),
                "-w",
                "-t",
                str(int(timeout)),
            ]
        )
        pid = int((data / "postmaster.pid").read_text().split()[0])
        server = PostgresServer("127.0.0.1", port, PG_USER, PASSWORD, DATABASE, pid, folder)
        server.create_database(DATABASE)
        yield server
    finally:
        if pid is not None:
            _stop(pid, timeout)
        shutil.rmtree(folder, ignore_errors=True)


def _stop(pid: int, timeout: float) -> None:
    """Fast shutdown (SIGINT) of the postmaster ``pid``; SIGKILL if it lingers."""
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
