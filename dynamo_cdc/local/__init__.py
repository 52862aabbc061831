"""The embedded local AWS: moto in server mode plus AWS-faithful PITR exports and DynamoDB Streams.

DynamoDB Streams come from the stream simulator (:mod:`dynamo_cdc.local.streams`) by default:
AWS's record format (eventVersion 1.1, userIdentity on TTL deletes), shards that rotate and
split, a 24-hour trim horizon, 15-minute iterators, a new StreamArn after disable + enable, all
on the server's clock. ``--moto-streams`` / ``streams="moto"`` serves moto's instead.

Three ways to run it, all bound to 127.0.0.1:

* ``python -m dynamo_cdc.local [--port N] [--demo] [--moto-streams]``: in the foreground until
  SIGINT/SIGTERM; prints ``Local AWS listening on http://127.0.0.1:N`` first.
* :func:`start_local_aws`: in this process, in a thread (``with start_local_aws() as aws:``).
* :func:`launch_local_aws`: as a child process (for tests and for Dagster runs in other
  processes); stop it with ``.stop()``, which signals its pid.

The control API (clock, forced export failures, TTL sweep, stream rotation and faults,
credentials, reset) is served on the same port under ``/_dynamo_cdc/``; :class:`LocalAwsControl`
calls it. See :data:`dynamo_cdc.local.server.CONTROL_API`. It answers only requests that carry
the server's control token (``.control`` of what :func:`start_local_aws` and
:func:`launch_local_aws` return holds it; a launched server gets it from its parent through
the environment) and name a loopback host: see :mod:`dynamo_cdc.local.server`.

Any credentials are accepted unless one access key id is required (``--access-key-id ID``,
``access_key_id=`` or :meth:`LocalAwsControl.require_access_key_id`): then requests signed with
another one get AWS's answers to an unknown key (DynamoDB 400 ``UnrecognizedClientException``,
S3 403 ``InvalidAccessKeyId``), to test how code handles wrong credentials.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dynamo_cdc.local.server import LocalAwsApp, LocalAwsServer

__all__ = [
    "LocalAws",
    "LocalAwsControl",
    "LocalAwsProcess",
    "launch_local_aws",
    "start_local_aws",
]

LISTENING_PREFIX = "Local AWS listening on "


class LocalAwsControl:
    """A client of the control API of a running local AWS (in this process or another).

    Args:
        endpoint_url: the server's endpoint.
        token: the server's control token (default: ``$DYNAMO_CDC_LOCAL_AWS_TOKEN``).
        timeout: seconds per call.
    """

    def __init__(self, endpoint_url: str, token: str | None = None, timeout: float = 10.0) -> None:
        from dynamo_cdc.local.server import CONTROL_TOKEN_ENV

        self.endpoint_url = endpoint_url.rstrip("/")
        self.token = token or os.environ.get(CONTROL_TOKEN_ENV, "")
        self.timeout = timeout

    def _call(self, method: str, route: str, payload: dict[str, Any] | None = None) -> Any:
        from dynamo_cdc.local.server import CONTROL_TOKEN_HEADER

        data = json.dumps(payload or {}).encode() if method == "POST" else None
        req = urllib.request.Request(
            f"{self.endpoint_url}/_dynamo_cdc/{route}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", CONTROL_TOKEN_HEADER: self.token},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read() or b"{}")

    def health(self) -> bool:
        """True when the server answers."""
        try:
            return bool(self._call("GET", "health").get("ok"))
        except OSError:
            return False

    def clock(self) -> dict[str, Any]:
        """``{"now": ISO-8601, "now_micros": int, "offset_seconds": float}``."""
        return dict(self._call("GET", "clock"))

    def advance_clock(self, seconds: float) -> dict[str, Any]:
        """Move the server's clock forward by ``seconds``."""
        return dict(self._call("POST", "clock", {"advance_seconds": seconds}))

    def set_clock(self, epoch_seconds: float) -> dict[str, Any]:
        """Jump the server's clock forward to ``epoch_seconds``."""
        return dict(self._call("POST", "clock", {"set_epoch_seconds": epoch_seconds}))

    def fail_next_export(
        self, failure_code: str = "InternalError", failure_message: str | None = None
    ) -> None:
        """Make the next export started end FAILED with this code and message."""
        payload: dict[str, Any] = {"failure_code": failure_code}
        if failure_message:
            payload["failure_message"] = failure_message
        self._call("POST", "exports/fail-next", payload)

    def configure_exports(
        self,
        *,
        delay_seconds: float | None = None,
        items_per_file: int | None = None,
        max_files: int | None = None,
    ) -> None:
        """Change how long exports stay IN_PROGRESS and how items are split into files."""
        payload = {
            k: v
            for k, v in {
                "delay_seconds": delay_seconds,
                "items_per_file": items_per_file,
                "max_files": max_files,
            }.items()
            if v is not None
        }
        self._call("POST", "exports/config", payload)

    def ttl_sweep(self) -> int:
        """Delete expired items (TTL attribute <= the server's now); returns how many."""
        return int(self._call("POST", "ttl/sweep")["deleted"])

    def streams(self) -> dict[str, Any]:
        """The stream simulator's state: ``{"mode": "simulator" | "moto" | "custom",
        "config": {knob: value}, "streams": [{"account", "region", "table", "stream_arn",
        "stream_label", "view_type", "enabled"}], "calls": {operation: n},
        "errors": {code: n}}`` (``streams`` lists each table's latest stream)."""
        return dict(self._call("GET", "streams"))

    def rotate_shards(
        self,
        table: str,
        *,
        split: bool = False,
        region: str | None = None,
        account: str | None = None,
    ) -> list[str]:
        """Close the open shards of the table's stream and open their children.

        Args:
            table: the table (its stream must be enabled).
            split: two children per closed shard (each half its hash range) instead of one.
            region / account: only needed when tables of that name have streams in several.

        Returns:
            The new shard ids (their ParentShardId is the closed shard).

        Raises:
            urllib.error.HTTPError: 400 when the table has no enabled stream.
        """
        payload: dict[str, Any] = {"table": table, "split": split}
        if region:
            payload["region"] = region
        if account:
            payload["account"] = account
        return list(self._call("POST", "streams/rotate", payload)["shard_ids"])

    def configure_streams(
        self,
        *,
        throttle_rate: float | None = None,
        internal_error_rate: float | None = None,
        enforce_read_limit: bool | None = None,
        rotate_every_records: int | None = None,
    ) -> dict[str, Any]:
        """Set stream fault and rotation knobs (None leaves a knob as it is).

        Args:
            throttle_rate: fraction of GetRecords calls answered LimitExceededException.
            internal_error_rate: fraction of all Streams calls answered InternalServerError (500).
            enforce_read_limit: throttle a sixth GetRecords on one shard within one second.
            rotate_every_records: rotate a shard once it holds this many records (0: never).

        Returns:
            All knobs after the change.
        """
        payload = {
            k: v
            for k, v in {
                "throttle_rate": throttle_rate,
                "internal_error_rate": internal_error_rate,
                "enforce_read_limit": enforce_read_limit,
                "rotate_every_records": rotate_every_records,
            }.items()
            if v is not None
        }
        return dict(self._call("POST", "streams/config", payload)["config"])

    def require_access_key_id(self, access_key_id: str | None) -> None:
        """Answer requests signed with any other access key id as AWS answers an unknown key
        (DynamoDB 400 UnrecognizedClientException, S3 403 InvalidAccessKeyId); None accepts
        any credentials again."""
        self._call("POST", "credentials", {"access_key_id": access_key_id})

    def required_access_key_id(self) -> str | None:
        """The access key id requests must be signed with, or None when any is accepted."""
        key = self._call("GET", "credentials").get("access_key_id")
        return str(key) if key is not None else None

    def reset(self) -> None:
        """Forget every table, bucket, export, history and stream; clock back to wall time;
        stream knobs back to their start values (a required access key id stays)."""
        self._call("POST", "reset")


class LocalAws:
    """A local AWS serving in a thread of this process (see :func:`start_local_aws`)."""

    def __init__(self, server: LocalAwsServer) -> None:
        self.server = server
        self.endpoint_url = server.endpoint_url
        self.port = server.port
        self.control = LocalAwsControl(self.endpoint_url, server.app.control_token)

    @property
    def app(self) -> LocalAwsApp:
        """The WSGI app: ``.clock``, ``.history``, ``.exports``, ``.streams`` (the
        :class:`~dynamo_cdc.local.server.StreamsRouter`, None with moto's streams),
        ``.attach_streams_simulator``."""
        return self.server.app

    def stop(self) -> None:
        """Stop serving (moto's state stays in this process until reset)."""
        self.server.shutdown()

    def __enter__(self) -> LocalAws:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_aws(
    port: int = 0,
    *,
    demo: bool = False,
    export_delay_seconds: float = 0.3,
    streams: str = "simulator",
    streams_options: dict[str, Any] | None = None,
    streams_simulator: Any = None,
    access_key_id: str | None = None,
) -> LocalAws:
    """Start the local AWS in a thread of this process, on 127.0.0.1.

    Args:
        port: the port, 0 for a free one (read ``.endpoint_url``).
        demo: create the demo tables and bucket (see :mod:`dynamo_cdc.local.demo`).
        export_delay_seconds: how long exports stay IN_PROGRESS.
        streams: ``"simulator"`` (default) or ``"moto"`` (moto's streams, for comparison).
        streams_options: keyword arguments of the simulators (``seed``,
            ``rotate_every_records``, ``retention_seconds``...).
        streams_simulator: a DynamoDB Streams simulator of your own to plug in instead (see
            :meth:`~dynamo_cdc.local.server.LocalAwsApp.attach_streams_simulator`).
        access_key_id: require this access key id on every request (after the demo tables
            are made); None accepts any credentials.

    Returns:
        A :class:`LocalAws`; use it as a context manager or call ``.stop()``.
    """
    from dynamo_cdc.local.server import LocalAwsApp, LocalAwsServer

    app = LocalAwsApp(
        export_delay_seconds=export_delay_seconds,
        streams=streams,
        streams_options=streams_options,
        streams_simulator=streams_simulator,
    )
    server = LocalAwsServer(port, app)
    server.start()
    aws = LocalAws(server)
    if demo:
        from dynamo_cdc.local.demo import create_demo_tables

        create_demo_tables(aws.endpoint_url)
    app.required_access_key_id = access_key_id
    return aws


class LocalAwsProcess:
    """A local AWS running as a child process (see :func:`launch_local_aws`)."""

    def __init__(self, proc: subprocess.Popen[str], endpoint_url: str, token: str) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.endpoint_url = endpoint_url
        self.port = int(endpoint_url.rsplit(":", 1)[1])
        self.control = LocalAwsControl(endpoint_url, token)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child by its pid: SIGTERM, then SIGKILL if it has not exited in time."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> LocalAwsProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_local_aws(
    port: int = 0,
    *,
    demo: bool = False,
    export_delay_seconds: float | None = None,
    moto_streams: bool = False,
    access_key_id: str | None = None,
    env: dict[str, str] | None = None,
    stderr_path: str | None = None,
    timeout: float = 60.0,
) -> LocalAwsProcess:
    """Start ``python -m dynamo_cdc.local`` as a child process and wait until it answers.

    Args:
        port: the port, 0 to let the child pick a free one (it prints the endpoint, read here).
        demo: pass ``--demo`` (demo tables and bucket).
        export_delay_seconds: pass ``--export-delay``.
        moto_streams: pass ``--moto-streams`` (moto's DynamoDB Streams, not the simulator).
        access_key_id: pass ``--access-key-id`` (requests signed with another key id are
            refused as AWS refuses an unknown key).
        env: the child's environment (default: this one); the control token is added to it
            (:data:`~dynamo_cdc.local.server.CONTROL_TOKEN_ENV`, read ``.control.token``).
        stderr_path: where the child's log goes (default: discarded).
        timeout: seconds to wait for the endpoint line and the health check.

    Raises:
        RuntimeError: the child exited or did not answer in time (it is killed then).
    """
    cmd = [sys.executable, "-m", "dynamo_cdc.local", "--port", str(port)]
    if demo:
        cmd.append("--demo")
    if export_delay_seconds is not None:
        cmd += ["--export-delay", str(export_delay_seconds)]
    if moto_streams:
        cmd.append("--moto-streams")
    if access_key_id is not None:
        cmd += ["--access-key-id", access_key_id]
    from dynamo_cdc.local.server import CONTROL_TOKEN_ENV

    token = secrets.token_urlsafe(32)  # through the environment: argv is visible to every user
    child_env = dict(os.environ if env is None else env, **{CONTROL_TOKEN_ENV: token})
    stderr: Any = open(stderr_path, "ab") if stderr_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=child_env, bufsize=1
        )
    finally:
        if stderr_path:
            stderr.close()
    deadline = time.monotonic() + timeout
    endpoint = None
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(LISTENING_PREFIX):
            endpoint = line[len(LISTENING_PREFIX) :].strip()
            break
    handle = LocalAwsProcess(proc, endpoint or "http://127.0.0.1:0", token)
    if endpoint is None:
        handle.stop(timeout=5)
        raise RuntimeError(f"the local AWS did not start (exit code {proc.returncode}): {cmd}")
    while time.monotonic() < deadline:
        if handle.control.health():
            return handle
        time.sleep(0.05)
    handle.stop(timeout=5)
    raise RuntimeError(f"the local AWS at {endpoint} did not answer within {timeout} s")
