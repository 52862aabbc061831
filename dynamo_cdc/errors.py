"""Typed, actionable exceptions.

Every failure a user can act on has its own type. Messages name the table (or file), say what is
wrong and how to fix it. Messages never contain credentials: build them from names, ARNs and
paths only.
"""

from __future__ import annotations


class DynamoCdcError(Exception):
    """Base class of every error this package raises on purpose."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.fix = fix
        super().__init__(f"{message} Fix: {fix}" if fix else message)


class ConfigError(DynamoCdcError):
    """Bad settings or a malformed table list."""


class TableListError(ConfigError):
    """The table list file breaks a rule; the message names the file, the line and the rule."""


class UnsafeTableNameError(ConfigError):
    """A table name that DynamoDB would reject, or that could escape the lake root."""


class TableNotFoundError(DynamoCdcError):
    """DescribeTable says the table does not exist in this account and region."""


class StreamNotEnabledError(DynamoCdcError):
    """The table has no stream, or its view type is not NEW_AND_OLD_IMAGES."""


class PitrNotEnabledError(DynamoCdcError):
    """Point-in-time recovery is off, so exports are impossible."""


class PitrWindowError(DynamoCdcError):
    """The requested export time is outside the table's point-in-time-recovery window."""


class BucketError(DynamoCdcError):
    """The export bucket is missing, or it refuses writes."""


class ExportFailedError(DynamoCdcError):
    """DynamoDB reports the export FAILED (FailureCode and FailureMessage are in the message)."""


class ExportVerificationError(DynamoCdcError):
    """An export's data disagrees with its manifest: missing file, MD5 or item count mismatch,
    truncated gzip, a line that is not an item."""


class ExportBucketError(ExportFailedError, BucketError):
    """The export FAILED because of its bucket (missing, or DynamoDB may not write to it)."""


class StreamRecordError(DynamoCdcError):
    """A stream answered something AWS never sends: a shard id or sequence number that breaks
    its documented shape, so it cannot become a file name."""


class CodecError(DynamoCdcError):
    """A value that is not valid DynamoDB JSON or Ion (unknown type tag, bad number, ...)."""


class LakeError(DynamoCdcError):
    """The lake root cannot be written (missing permission, full disk, bad URI)."""


class LakeBusyError(LakeError):
    """Another process holds a lake lock (:func:`dynamo_cdc.lock.exclusive`) past the wait."""


class StreamGapError(DynamoCdcError):
    """Changes may have been lost between the checkpoint and what the stream still holds.

    Raised for a checkpoint behind the trim horizon, a new stream ARN, or a shard that vanished
    before it was read to its end. Attributes say which table and which window.
    """

    def __init__(
        self,
        message: str,
        *,
        table: str,
        reason: str,
        window_start: str | None = None,
        window_end: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.table = table
        self.reason = reason
        self.window_start = window_start
        self.window_end = window_end
        super().__init__(message, fix=fix)


class CheckpointError(DynamoCdcError):
    """A checkpoint file that cannot be read (corrupt JSON, unknown version, other table)."""


class CredentialsError(DynamoCdcError):
    """AWS rejected the credentials (wrong key, expired token) or found none."""
