"""What moto's Glue lacks for pyiceberg's Glue catalog: optimistic concurrency on UpdateTable.

pyiceberg commits an Iceberg table to Glue with ``UpdateTable(..., VersionId=<the version it
read>)``; AWS Glue answers ``ConcurrentModificationException`` when the table has moved on since
(botocore's model lists it among UpdateTable's errors), and that is what makes two writers take
turns. moto accepts any VersionId and lets the second writer silently replace the first one's
commit. :func:`check_update_table` refuses a stale VersionId as Glue does; the server calls it
under its lock, right before moto runs the update, so check and update are one step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GLUE_PREFIX = "AWSGlue."


class GlueError(Exception):
    """An AWS error answer (code, message, HTTP status), as the server sends them."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def check_update_table(account: str, region: str, params: Mapping[str, Any]) -> None:
    """Raise ``ConcurrentModificationException`` when UpdateTable's VersionId is not the
    table's current version (no VersionId: no check, as on AWS)."""
    version = params.get("VersionId")
    if not version:
        return
    from moto.glue.models import glue_backends

    name = str(params.get("Name") or (params.get("TableInput") or {}).get("Name"))
    try:
        table = glue_backends[account][region].get_table(str(params.get("DatabaseName")), name)
    except Exception:
        return  # moto answers the missing database or table itself
    current = str(table.as_dict().get("VersionId"))
    if str(version) != current:
        raise GlueError(
            "ConcurrentModificationException",
            f"Update table failed due to concurrent modifications (version {version} is not "
            f"the current version {current}).",
        )
