"""boto3 clients built from :class:`~dynamo_cdc.config.Settings`, and AWS error translation.

Clients are made here and nowhere else, so that the endpoint (real AWS or the local AWS), the
region, explicit credentials and retry settings are applied the same way everywhere.

Credentials never reach a log, at any level. With DEBUG logging on (``dynamo-cdc --debug``, or a
user's own ``logging.basicConfig(level=logging.DEBUG)``), botocore logs every request's headers
(``Authorization`` holds the access key id, ``X-Amz-Security-Token`` the session token), its
canonical request and the response bodies (STS answers hold whole credentials), and urllib3 logs
URLs (a presigned one holds ``X-Amz-Credential`` and the token). :func:`protect_logs` puts a
filter on every logger of botocore, boto3, s3transfer and urllib3 that rewrites such records
before any handler sees them: the values of those headers, query parameters and response fields,
anything shaped like an AWS access key id, and every credential value a :class:`Clients`
resolved (explicit, or from the default chain: environment, shared credentials file, role)
become ``***``. It is installed whenever a client is made here or a lake is given an S3 client.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError, NoCredentialsError

from dynamo_cdc.config import Settings
from dynamo_cdc.errors import ConfigError, CredentialsError, DynamoCdcError

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

    def __init__(
        self, settings: Settings, *, max_attempts: int = 5, connect_timeout: float = 60.0
    ) -> None:
        self.settings = settings
        self._max_attempts = max_attempts
        self._connect_timeout = connect_timeout
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
            _remember_credentials(self._session)
        return self._session

    @property
    def region(self) -> str:
        return self.settings.region or self.session.region_name or DEFAULT_REGION

    def client(self, service: str) -> Any:
        """A client for ``service`` ("dynamodb", "dynamodbstreams", "s3", "sts")."""
        if service not in self._clients:
            from botocore.config import Config

            if not self.settings.endpoint_url:
                check_region(self.session, self.region)

            config = Config(
                retries={"total_max_attempts": self._max_attempts, "mode": "standard"},
                account_id_endpoint_mode="disabled",
                connect_timeout=self._connect_timeout,
                s3={"addressing_style": "path"} if self.settings.endpoint_url else None,
            )
            self._clients[service] = cast(Any, self.session).client(
                service,
                region_name=self.region,
                endpoint_url=self.settings.endpoint_url,
                config=config,
            )
            protect_logs()  # after the client's modules (and their loggers) are imported
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


#: The top-level loggers whose records can hold request headers, signed URLs or credentials.
REDACTED_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")
REDACTED = "***"
#: Credential values shorter than this are not redacted by value: no AWS credential is (key
#: ids are 20 characters, secrets 40), and the local AWS's placeholders ("local", "testing")
#: would otherwise blank out table names in debug logs.
MIN_SECRET_LENGTH = 16
_SECRET_PATTERNS = (
    # header values, as botocore prints them (a dict repr) or as a canonical request lists them
    re.compile(
        r"(?i)((?:authorization|x-amz-security-token)['\"]?\s*[:=]\s*b?(['\"]))(?:(?!\2).)*"
    ),
    re.compile(r"(?im)^((?:authorization|x-amz-security-token)\s*:\s*).*$"),
    # query parameters of presigned URLs, and the Credential= of an Authorization header
    re.compile(
        r"(?i)((?:x-amz-)?(?:credential|security-token|signature|awsaccesskeyid)=)[^&\s,'\"]+"
    ),
    # credentials in response bodies (STS, container and instance metadata): JSON and XML
    re.compile(
        r"(?i)((?:\"|\b)(?:access_?key_?id|secret_?access_?key|session_?token|token)\"?\s*:\s*\")"
        r"[^\"]*"
    ),
    re.compile(r"(?i)(<(AccessKeyId|SecretAccessKey|SessionToken)>)[^<]*"),
    # anything shaped like an access key id
    re.compile(r"()\b(?:AKIA|ASIA|AROA|AIDA|ABIA|ACCA)[A-Z0-9]{16}\b"),
)
#: Every credential value seen, longest first (replaced whole, never changed in place).
_known_secrets: tuple[str, ...] = ()
_known_lock = threading.Lock()


def redact_credentials(text: str) -> str:
    """``text`` with every credential it holds replaced by ``***`` (see the module docstring)."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def remember_secret(value: str | None) -> None:
    """Redact ``value`` (and its URL-encoded form) wherever a protected logger prints it."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    global _known_secrets
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote(value)}
    with _known_lock:
        _known_secrets = tuple(sorted(forms.union(_known_secrets), key=len, reverse=True))


def _remember_credentials(session: Any) -> None:
    """Remember the credentials a session resolved (explicit or from the default chain)."""
    try:
        credentials = session.get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except Exception:  # no credentials yet: the first call will say so, as it always did
        return
    if frozen is not None:
        for value in (frozen.access_key, frozen.secret_key, frozen.token):
            remember_secret(value)


class _CredentialRedactor(logging.Filter):
    """Rewrites a log record's message with :func:`redact_credentials` before handlers see it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: logging reports it as it would have
            return True
        redacted = redact_credentials(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTOR = _CredentialRedactor()


def protect_logs() -> None:
    """Put the credential filter on every existing logger of :data:`REDACTED_LOGGERS`.

    A logger's filter sees only the records logged on that logger (not those propagated from
    its children), so each logger gets it; idempotent and cheap, it runs again whenever a
    client is made, when the libraries have imported their modules.
    """
    names = [
        n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in REDACTED_LOGGERS
    ]
    for name in {*REDACTED_LOGGERS, *names}:
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


def check_region(session: Any, region: str) -> None:
    """Refuse a region that botocore does not know for DynamoDB, before any request.

    Raises:
        ConfigError: the region is misspelt, or newer than the installed botocore.
    """
    known = set(session.get_available_regions("dynamodb"))
    for partition in ("aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b"):
        known.update(session.get_available_regions("dynamodb", partition_name=partition))
    if region not in known:
        raise ConfigError(
            f"Region {region!r} is not an AWS region that DynamoDB serves.",
            fix="set DYNAMO_CDC_REGION (or AWS_REGION) to the tables' region, such as "
            "us-east-1; for a region newer than the installed boto3, upgrade boto3.",
        )


def user_error(exc: BaseException, settings: Settings) -> DynamoCdcError | None:
    """The actionable error a command reports for ``exc``, or None for an unexpected failure.

    Our own errors stand as they are; botocore's (no credentials, rejected credentials, an
    endpoint where nothing answers) become one message that says what is wrong and the fix.
    """
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoRegionError,
    )

    if isinstance(exc, DynamoCdcError):
        return exc
    if isinstance(exc, (NoCredentialsError, ClientError)):
        try:
            raise_if_credentials(exc, "call AWS")
        except CredentialsError as translated:
            return translated
        if isinstance(exc, ClientError):
            op = getattr(exc, "operation_name", "the call")
            return DynamoCdcError(
                f"AWS refused {op} ({error_code(exc)}): "
                f"{exc.response.get('Error', {}).get('Message', '')}".rstrip(": "),
                fix="grant the action named above to these credentials (see the README's IAM "
                "policy), or run again with --debug for the details.",
            )
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)):
        url = str(getattr(exc, "kwargs", {}).get("endpoint_url", "") or "the AWS endpoint")
        if settings.endpoint_url:
            fix = (
                f"start the local AWS (dynamo-cdc local-aws) at {settings.endpoint_url}, or "
                "correct DYNAMO_CDC_ENDPOINT_URL (unset it for real AWS)."
            )
        else:
            fix = "check the network, a proxy, and that DYNAMO_CDC_REGION is the tables' region."
        return DynamoCdcError(f"Cannot connect to {url}: nothing answers there.", fix=fix)
    if isinstance(exc, OSError) and exc.filename:
        return DynamoCdcError(
            f"Cannot open {exc.filename!r}: {exc.strerror or exc}.",
            fix="check the path and its permissions.",
        )
    if isinstance(exc, NoRegionError):
        return ConfigError(
            "No AWS region is configured.", fix="set DYNAMO_CDC_REGION, e.g. us-east-1."
        )
    return None


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
