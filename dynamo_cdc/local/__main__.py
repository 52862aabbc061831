"""``python -m dynamo_cdc.local [--port N] [--demo] [--moto-streams] [--access-key-id ID]``: run
the local AWS.

Binds 127.0.0.1 (another address only with ``--host H --allow-remote``), prints ``Local AWS
listening on http://127.0.0.1:N`` (then nothing else on stdout, so a parent can read that one
line) and serves in the foreground until SIGINT or SIGTERM, then exits 0 within a fraction of a
second. The control API's token comes from ``$DYNAMO_CDC_LOCAL_AWS_TOKEN`` (how
:func:`~dynamo_cdc.local.launch_local_aws` hands it over); without it a new one is made and
logged on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dynamo_cdc.local",
        description="Run the local AWS (moto + AWS-faithful DynamoDB exports and Streams) on "
        "127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=4566, help="port, 0 for a free one")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="create the demo tables (orders, app-events.v1) and the bucket dynamo-cdc-exports",
    )
    parser.add_argument(
        "--export-delay",
        type=float,
        default=0.3,
        help="seconds an export stays IN_PROGRESS (default 0.3)",
    )
    parser.add_argument(
        "--moto-streams",
        action="store_true",
        help="serve moto's DynamoDB Streams instead of the stream simulator (for comparison: "
        "one shard, no trims, no expiry, no re-enable)",
    )
    parser.add_argument(
        "--streams-seed",
        type=int,
        default=0,
        help="seed of the stream simulator (shard ids, event ids, sequence gaps, faults)",
    )
    parser.add_argument(
        "--access-key-id",
        default=None,
        help="accept only requests signed with this access key id; others get AWS's answer to "
        "an unknown key (DynamoDB UnrecognizedClientException, S3 InvalidAccessKeyId)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; any other needs --allow-remote)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="bind a non-loopback --host all the same: no signature is checked, so whoever "
        "reaches the port can read and change everything",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="accept requests whose Host header names NAME (besides loopback names); repeatable",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    # Background processes here may start with SIGINT/SIGTERM ignored; take them back.
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    from dynamo_cdc.local.server import CONTROL_TOKEN_ENV, LocalAwsApp, LocalAwsServer

    token = os.environ.get(CONTROL_TOKEN_ENV)
    app = LocalAwsApp(
        export_delay_seconds=args.export_delay,
        streams="moto" if args.moto_streams else "simulator",
        streams_options={"seed": args.streams_seed},
        control_token=token,
        allowed_hosts=args.allow_host,
    )
    try:
        server = LocalAwsServer(
            args.port,
            app,
            args.host,
            log_requests=args.verbose,
            allow_remote=args.allow_remote,
        )
    except ValueError as exc:
        parser.error(str(exc))
    server.start()
    if not token:
        logging.getLogger(__name__).info(
            "control API token (send it as X-Dynamo-Cdc-Token, or set %s for LocalAwsControl): %s",
            CONTROL_TOKEN_ENV,
            app.control_token,
        )
    if args.demo:
        from dynamo_cdc.local.demo import create_demo_tables

        created = create_demo_tables(server.endpoint_url)
        logging.getLogger(__name__).info("demo tables: %s", ", ".join(created))
    # after the demo tables, which are made with whatever credentials this process has
    app.required_access_key_id = args.access_key_id
    sys.stdout.write(f"Local AWS listening on {server.endpoint_url}\n")
    sys.stdout.flush()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
    return 0


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown.

    All state is in memory and is thrown away anyway, but freeing it object by object grows with
    what the server holds (measured: 0.9 s after 12,000 items in moto's tables and streams, so
    seconds after a test session): the process ends here instead, once the logs are flushed.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())
