"""boto3 clients built from :class:`~dynamo_cdc.config.Settings`, and AWS error translation.

Clients are made here and nowhere else, so that the endpoint (real AWS or the local AWS), the
region, explicit credentials and retry settings are applied the same way everywhere.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError, NoCredentialsError

from dynamo_cdc.config import Settings
from dynamo_cdc.errors import CredentialsError

if TYPE_CHECKING:
    import boto3

DEFAULT_REGION = "us-east-1"
CREDENTIAL_ERROR_CODES = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
}


class Clients:
    """Lazily created boto3 clients for DynamoDB, DynamoDB Streams and S3."""

    def __init__(self, settings: Settings, *, max_attempts: int = 5) -> None:
        self.settings = settings
        self._max_attempts = max_attempts
        self._session: boto3.session.Session | None = None
        self._clients: dict[str, Any] = {}

    @property
    def session(self) -> boto3.session.Session:
        if self._session is None:
            s = self.settings
            kwargs: dict[str, Any] = {}
            if s.access_key_id:
                kwargs.update(
                    aws_access_key_id=s.access_key_id,
                    aws_secret_access_key=s.secret_access_key,
                    aws_session_token=s.session_token,
                )
            elif s.endpoint_url and not _has_default_credentials():
                # The local AWS accepts any credentials; don't make newcomers configure any.
                kwargs.update(aws_access_key_id="local", aws_secret_access_key="local")
            import boto3  # here: a conversion worker imports this module and needs no client

            self._session = boto3.session.Session(**kwargs)
        return self._session

    @property
    def region(self) -> str:
        return self.settings.region or self.session.region_name or DEFAULT_REGION

    def client(self, service: str) -> Any:
        """A client for ``service`` ("dynamodb", "dynamodbstreams", "s3", "sts")."""
        if service not in self._clients:
            from botocore.config import Config

            config = Config(
                retries={"total_max_attempts": self._max_attempts, "mode": "standard"},
                account_id_endpoint_mode="disabled",
                s3={"addressing_style": "path"} if self.settings.endpoint_url else None,
            )
            self._clients[service] = cast(Any, self.session).client(
                service,
                region_name=self.region,
                endpoint_url=self.settings.endpoint_url,
                config=config,
            )
        return self._clients[service]

    @property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @property
    def streams(self) -> Any:
        return self.client("dynamodbstreams")

    @property
    def s3(self) -> Any:
        return self.client("s3")


def _has_default_credentials() -> bool:
    return bool(os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"))


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, or '' for anything else."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def raise_if_credentials(exc: BaseException, action: str) -> None:
    """Re-raise ``exc`` as :class:`CredentialsError` when AWS rejected the credentials."""
    if isinstance(exc, NoCredentialsError):
        raise CredentialsError(
            f"No AWS credentials were found while trying to {action}.",
            fix="configure boto3's credential chain (AWS_PROFILE, environment, instance role) or "
            "set DYNAMO_CDC_AWS_ACCESS_KEY_ID and DYNAMO_CDC_AWS_SECRET_ACCESS_KEY.",
        ) from None
    if error_code(exc) in CREDENTIAL_ERROR_CODES:
        raise CredentialsError(
            f"AWS rejected the credentials while trying to {action} ({error_code(exc)}).",
            fix="check the access key id and secret (or the profile/role) and that the token "
            "has not expired.",
        ) from None
