"""Answer a boto3 ``dynamodbstreams`` client from a StreamSimulator, in-process.

The hook sits on botocore's ``before-send`` event: the request is built, validated and signed as
usual, then, instead of going on the network, its JSON body is handed to
``StreamSimulator.handle`` and the answer comes back as a real HTTP response
(``botocore.awsrequest.AWSResponse``). Parsing, error mapping (``ClientError`` with the AWS
code) and retries are botocore's own, so code tested this way runs on AWS unchanged. Retries
sleep for real: give clients that expect errors ``Config(retries={"max_attempts": 1})``.

Usage::

    client = boto3.client("dynamodbstreams", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    detach = attach(client, simulator)
    client.get_records(ShardIterator=...)
    detach()    # back to the network
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from dynamo_cdc.local.streams import SimulatedError, StreamSimulator, http_response, to_http


class _RawBody:
    """The minimal ``raw`` an AWSResponse needs: something with ``stream()``."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def attach(client: Any, simulator: StreamSimulator) -> Callable[[], None]:
    """Answer every call of a ``dynamodbstreams`` client from ``simulator``.

    Args:
        client: A boto3/botocore client for ``dynamodbstreams``.
        simulator: The simulator that answers.

    Returns:
        A function that detaches the hook again.

    Raises:
        ValueError: The client is not a DynamoDB Streams client.
    """
    service_id = client.meta.service_model.service_id
    if service_id != "DynamoDB Streams":
        raise ValueError(f"attach() needs a dynamodbstreams client, not {service_id}")
    event = f"before-send.{service_id.hyphenize()}"
    unique_id = f"dynamo-cdc-stream-simulator-{id(client)}"

    def _send(request: Any, **_: Any) -> AWSResponse:
        target = request.headers.get("X-Amz-Target", b"")
        if isinstance(target, bytes):
            target = target.decode("ascii")
        operation = target.rsplit(".", 1)[-1]
        body = request.body or b"{}"
        if not isinstance(body, bytes | str):
            body = body.read()
        try:
            status, headers, payload = http_response(simulator.handle(operation, json.loads(body)))
        except SimulatedError as exc:
            status, headers, payload = to_http(exc)
        http_headers = HTTPHeaders()
        for name, value in headers.items():
            http_headers[name] = value
        return AWSResponse(request.url, status, http_headers, _RawBody(payload))

    client.meta.events.register(event, _send, unique_id=unique_id)

    def detach() -> None:
        client.meta.events.unregister(event, unique_id=unique_id)

    return detach
