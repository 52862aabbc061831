"""Resources: AWS clients for DynamoDB and DynamoDB Streams, S3 for the lake, and the lake.

Every field is a described pydantic field and every deployment setting comes from a
``DYNAMO_CDC_*`` environment variable through :class:`dagster.EnvVar`, which Dagster resolves
when a run or a sensor tick starts (never at import time), so a secret never shows in the UI.
"""

import os
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field

from dynamo_cdc.aws import Clients
from dynamo_cdc.config import Settings
from dynamo_cdc.lake import Lake

#: The bucket ``python -m dynamo_cdc.local --demo`` creates (see :mod:`dynamo_cdc.local.demo`).
LOCAL_DEMO_BUCKET = "dynamo-cdc-exports"


class DynamoDBResource(ResourceWithBoto3Configuration):
    """boto3 clients for DynamoDB, DynamoDB Streams and the PITR export bucket.

    Subclasses dagster-aws's ``ResourceWithBoto3Configuration`` (region, endpoint, retries,
    credentials) and adds where PITR exports go. ``get_clients()`` returns the library's
    :class:`dynamo_cdc.aws.Clients`, the one place boto3 clients are made.
    """

    export_bucket: str | None = Field(
        default=None,
        description="S3 bucket for PITR exports (DYNAMO_CDC_EXPORT_BUCKET); same region.",
    )
    export_prefix: str = Field(
        default="dynamo-cdc/exports",
        description="Key prefix of PITR exports in the export bucket (DYNAMO_CDC_EXPORT_PREFIX).",
    )

    export_sse_algorithm: str | None = Field(
        default=None,
        description="AES256 or KMS for the export files (DYNAMO_CDC_EXPORT_SSE_ALGORITHM).",
    )
    export_kms_key_id: str | None = Field(
        default=None, description="KMS key for SSE-KMS exports (DYNAMO_CDC_EXPORT_KMS_KEY_ID)."
    )
    export_bucket_owner: str | None = Field(
        default=None,
        description="Account owning a cross-account export bucket (DYNAMO_CDC_EXPORT_BUCKET_OWNER).",
    )

    def settings(self) -> Settings:
        """The library settings these fields stand for."""
        return Settings(
            export_bucket=self.export_bucket,
            export_prefix=self.export_prefix.strip("/"),
            export_sse_algorithm=self.export_sse_algorithm,
            export_kms_key_id=self.export_kms_key_id,
            export_bucket_owner=self.export_bucket_owner,
            endpoint_url=self.endpoint_url,
            region=self.region_name,
            access_key_id=self.aws_access_key_id,
            secret_access_key=self.aws_secret_access_key,
            session_token=self.aws_session_token,
        )

    def get_clients(self) -> Clients:
        """The library's clients (``.dynamodb``, ``.streams``, ``.s3``, ``.region``)."""
        return Clients(self.settings(), max_attempts=self.max_attempts)

    def get_client(self) -> Any:
        """A boto3 DynamoDB client."""
        return self.get_clients().dynamodb

    def get_streams_client(self) -> Any:
        """A boto3 DynamoDB Streams client."""
        return self.get_clients().streams

    def bucket(self) -> str:
        """The export bucket; on the local AWS the demo bucket when none is configured."""
        if self.export_bucket:
            return self.export_bucket
        if self.endpoint_url:
            return LOCAL_DEMO_BUCKET
        raise dg.Failure(
            "No export bucket is configured, so PITR exports have nowhere to go. "
            "Fix: set DYNAMO_CDC_EXPORT_BUCKET to an S3 bucket in the tables' region."
        )


class LakeResource(dg.ConfigurableResource):
    """The lake: a local folder or ``s3://bucket/prefix`` (see :class:`dynamo_cdc.lake.Lake`)."""

    root: str = Field(
        default="./lake",
        description="Lake root: a local folder or s3://bucket/prefix (DYNAMO_CDC_LAKE_ROOT).",
    )
    s3: dg.ResourceDependency[S3Resource]

    def get_lake(self) -> Lake:
        """A :class:`Lake`; the S3 client is made only for an ``s3://`` root."""
        client = self.s3.get_client() if self.root.startswith("s3://") else None
        return Lake(self.root, client)


def _env(name: str, default: Any = None) -> Any:
    """``EnvVar(name)`` when the variable is set, else ``default``.

    Dagster fails a run whose EnvVar is unset, so optional settings fall back to a default
    here; only the presence of the variable is looked at when definitions load, its value is
    resolved by Dagster when a run starts.
    """
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_resources() -> dict[str, Any]:
    """The resources of the code location, configured from ``DYNAMO_CDC_*`` variables."""
    return build_resources_for(
        lake_root=_env("DYNAMO_CDC_LAKE_ROOT", "./lake"),
        region_name=_env("DYNAMO_CDC_REGION"),
        endpoint_url=_env("DYNAMO_CDC_ENDPOINT_URL"),
        aws_access_key_id=_env("DYNAMO_CDC_AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_env("DYNAMO_CDC_AWS_SECRET_ACCESS_KEY"),
        aws_session_token=_env("DYNAMO_CDC_AWS_SESSION_TOKEN"),
        export_bucket=_env("DYNAMO_CDC_EXPORT_BUCKET"),
        export_prefix=_env("DYNAMO_CDC_EXPORT_PREFIX", "dynamo-cdc/exports"),
        export_sse_algorithm=_env("DYNAMO_CDC_EXPORT_SSE_ALGORITHM"),
        export_kms_key_id=_env("DYNAMO_CDC_EXPORT_KMS_KEY_ID"),
        export_bucket_owner=_env("DYNAMO_CDC_EXPORT_BUCKET_OWNER"),
    )


def build_resources_for(
    *,
    lake_root: Any = "./lake",
    region_name: Any = None,
    endpoint_url: Any = None,
    aws_access_key_id: Any = None,
    aws_secret_access_key: Any = None,
    aws_session_token: Any = None,
    export_bucket: Any = None,
    export_prefix: Any = "dynamo-cdc/exports",
    export_sse_algorithm: Any = None,
    export_kms_key_id: Any = None,
    export_bucket_owner: Any = None,
) -> dict[str, Any]:
    """The ``dynamodb``, ``s3`` and ``lake`` resources from settings (values or ``EnvVar``)."""
    boto = {
        "region_name": region_name,
        "endpoint_url": endpoint_url,
        "aws_access_key_id": aws_access_key_id,
        "aws_secret_access_key": aws_secret_access_key,
        "aws_session_token": aws_session_token,
    }
    s3 = S3Resource(**boto)
    return {
        "dynamodb": DynamoDBResource(
            export_bucket=export_bucket,
            export_prefix=export_prefix,
            export_sse_algorithm=export_sse_algorithm,
            export_kms_key_id=export_kms_key_id,
            export_bucket_owner=export_bucket_owner,
            **boto,
        ),
        "s3": s3,
        "lake": LakeResource(root=lake_root, s3=s3),
    }
