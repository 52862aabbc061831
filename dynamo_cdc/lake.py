"""The lake: a local folder or ``s3://bucket/prefix`` holding the Parquet datasets and state.

Layout (hive style, see DESIGN.md's data contract)::

    <root>/<table>/snapshot/export_date=YYYY-MM-DD/*.parquet
    <root>/<table>/changes/date=YYYY-MM-DD/hour=HH/*.parquet
    (partition columns renamed per table where a key attribute has their name: see layout.py)
    <root>/<table>/current/...
    <root>/<table>/_state/...      checkpoints, staging, landing files (not data)

Writes are atomic: a single file goes to a temporary name and is renamed (locally) or sent in one
PUT (S3). A folder of files (a snapshot partition) is written to a staging folder and published
at once: locally by renaming the folder into place, on S3 by uploading every file and then the
``_lineage.json`` marker last (S3 has no multi-object atomicity; :func:`dynamo_cdc.read_table`
reads only what a marker lists).
"""

from __future__ import annotations

import builtins
import errno
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from dynamo_cdc.config import validate_table_name
from dynamo_cdc.errors import LakeError
from dynamo_cdc.layout import staging_path

log = logging.getLogger(__name__)


class MissingObject(Exception):
    """An object that is not there (:meth:`Lake.s3_call` with ``missing_ok``; read_bytes answers
    None)."""


# NUL and the other C0 control characters, and DEL: no lake path holds one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_rel(rel: str) -> str:
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or any(p in ("..", ".", "") for p in parts):
        raise LakeError(
            f"Refusing lake path {rel!r}: it must be relative and stay inside the root."
        )
    if _CONTROL.search(rel):
        raise LakeError(f"Refusing lake path {rel!r}: it holds a control character.")
    return str(PurePosixPath(*parts))


@dataclass
class Lake:
    """A lake root. ``root`` is a local path or ``s3://bucket/prefix``.

    Args:
        root: where the datasets live.
        s3_client: a boto3 S3 client, needed only for an ``s3://`` root.
    """

    root: str
    s3_client: Any = None

    def __post_init__(self) -> None:
        if self.is_s3:
            rest = self.root[len("s3://") :]
            self.bucket, _, prefix = rest.partition("/")
            self.prefix = prefix.strip("/")
            if not self.bucket:
                raise LakeError(
                    f"Lake root {self.root!r} names no bucket.", fix="use s3://bucket/prefix."
                )
            if self.s3_client is not None:  # made elsewhere (dagster-aws's S3Resource, say)
                from dynamo_cdc.aws import protect_logs

                protect_logs()
        else:
            self.root = str(Path(self.root).expanduser().resolve())

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    # -- paths -------------------------------------------------------------------------------

    def table_path(self, table: str, *parts: str) -> str:
        """Relative path ``<table>/<parts...>``; the table name is validated first."""
        validate_table_name(table)
        return _check_rel("/".join((table, *parts)))

    def uri(self, rel: str = "") -> str:
        """Absolute local path or ``s3://`` URI of ``rel``."""
        rel = _check_rel(rel) if rel else ""
        if self.is_s3:
            key = "/".join(p for p in (self.prefix, rel) if p)
            return f"s3://{self.bucket}/{key}"
        return os.path.join(self.root, rel) if rel else self.root

    def key(self, rel: str) -> str:
        """The S3 key of ``rel`` (the prefix, then ``rel``)."""
        return "/".join(p for p in (self.prefix, _check_rel(rel)) if p)

    def local_path(self, rel: str) -> Path:
        """The local path of ``rel`` (a local lake)."""
        return Path(self.root) / _check_rel(rel)

    # -- single files ------------------------------------------------------------------------

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` at ``rel`` atomically (temp + fsync + rename, or one PUT)."""
        if self.is_s3:
            self.s3_call(
                "write",
                rel,
                lambda: self.s3_client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data),
            )
            return
        target = self.local_path(rel)
        with self.local_errors("write", rel):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)

    def put_file(self, rel: str, local_path: str | os.PathLike[str]) -> None:
        """Copy a local file to ``rel`` atomically."""
        if self.is_s3:
            with open(local_path, "rb") as fh:
                self.s3_call(
                    "write",
                    rel,
                    lambda: self.s3_client.put_object(
                        Bucket=self.bucket, Key=self.key(rel), Body=fh
                    ),
                )
            return
        target = self.local_path(rel)
        with self.local_errors("write", rel):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                shutil.copyfile(local_path, tmp)
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)

    def read_bytes(self, rel: str) -> bytes | None:
        """The content at ``rel``, or None when there is none."""
        if self.is_s3:
            try:
                return self.s3_call(
                    "read",
                    rel,
                    lambda: self.s3_client.get_object(Bucket=self.bucket, Key=self.key(rel))[
                        "Body"
                    ].read(),
                    missing_ok=True,
                )
            except MissingObject:
                return None
        try:
            with self.local_errors("read", rel):
                return self.local_path(rel).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, rel: str) -> bool:
        if self.is_s3:
            return bool(self.list(rel)) or self.read_bytes(rel) is not None
        return self.local_path(rel).exists()

    def list(self, rel: str) -> list[str]:
        """Relative paths of the files under ``rel`` (recursive, sorted); hidden temp files
        excluded."""
        rel = _check_rel(rel)
        if self.is_s3:
            base = self.key(rel).rstrip("/") + "/"
            cut = len(self.prefix) + 1 if self.prefix else 0
            out: list[str] = []

            def pages() -> None:
                paginator = self.s3_client.get_paginator("list_objects_v2")
                for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                    out.extend(obj["Key"][cut:] for obj in page.get("Contents", []))

            self.s3_call("list", rel, pages)
            return sorted(out)
        base_path = self.local_path(rel)
        if not base_path.exists():
            return []
        return sorted(
            str(p.relative_to(self.root)).replace(os.sep, "/")
            for p in base_path.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def folders(self, rel: str) -> builtins.list[str]:
        """Names of the folders directly under ``rel`` (sorted; on S3 the common prefixes)."""
        rel = _check_rel(rel)
        if self.is_s3:
            prefix = self.key(rel).rstrip("/") + "/"
            out: set[str] = set()

            def pages() -> None:
                paginator = self.s3_client.get_paginator("list_objects_v2")
                for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                    for p in page.get("CommonPrefixes", []):
                        out.add(p["Prefix"][len(prefix) :].rstrip("/"))

            self.s3_call("list", rel, pages)
            return sorted(out)
        path = self.local_path(rel)
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))

    def delete(self, rel: str) -> None:
        """Delete the file or folder at ``rel`` (no error if absent)."""
        if self.is_s3:
            keys = [self.key(r) for r in self.list(rel)]
            if self.read_bytes(rel) is not None:
                keys.append(self.key(rel))
            for i in range(0, len(keys), 1000):
                chunk = [{"Key": k} for k in keys[i : i + 1000]]
                self.s3_call(
                    "delete",
                    rel,
                    lambda chunk=chunk: self.s3_client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True}
                    ),
                )
            return
        p = self.local_path(rel)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)

    # -- folders published at once ------------------------------------------------------------

    @contextmanager
    def staging(self, table: str) -> Iterator[Path]:
        """A local folder to write a dataset's files into before :meth:`publish_dir`.

        For a local lake it lies inside ``<table>/_state/staging`` (same filesystem, so the
        publish is a rename); for S3 it is a local temporary folder. It is removed on exit.
        """
        if self.is_s3:
            with tempfile.TemporaryDirectory(prefix="dynamo-cdc-") as tmp:
                yield Path(tmp)
            return
        base = self.local_path(staging_path(self, table))
        with self.local_errors("write", str(base)):
            base.mkdir(parents=True, exist_ok=True)
            path = Path(tempfile.mkdtemp(dir=base))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish_dir(
        self,
        staging: Path,
        rel: str,
        marker: str | None = None,
        carry: dict[str, str] | None = None,
    ) -> builtins.list[str]:
        """Make the files of ``staging``, plus the lake files ``carry`` names (new name ->
        relative path of a file already in the lake, carried over by :meth:`copy` without
        passing through this process), the whole content of ``rel``.

        Locally the folder is renamed into place (an older content is renamed away first and
        deleted after), so readers see either the old or the new set, never a mix. On S3 every
        file is uploaded or copied, then ``marker`` (a file in ``staging``) is uploaded last,
        then objects left from an older content are deleted.

        Returns:
            the relative paths now under ``rel``.
        """
        rel = _check_rel(rel)
        carry = carry or {}
        if not self.is_s3:
            for name, src in carry.items():
                self._link_or_copy(self.local_path(src), staging / name)
        names = sorted(p.name for p in staging.iterdir() if p.is_file())
        if self.is_s3:
            old = set(self.list(rel))
            for name, src in sorted(carry.items()):
                self.copy(src, f"{rel}/{name}")
            ordered = [n for n in names if n != marker] + ([marker] if marker in names else [])
            for name in ordered:
                self.put_file(f"{rel}/{name}", staging / name)
            new = {f"{rel}/{n}" for n in [*names, *carry]}
            for stale in sorted(old - new):
                self.delete(stale)
            return sorted(new)
        target = self.local_path(rel)
        with self.local_errors("publish", rel):
            for name in names:
                with open(staging / name, "rb+") as fh:
                    os.fsync(fh.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            trash = None
            if target.exists():
                trash = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
                os.replace(target, trash)
            os.replace(staging, target)
            staging.mkdir()  # so the staging context manager can clean up as usual
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        return [f"{rel}/{n}" for n in names]

    def copy(self, src: str, dst: str) -> None:
        """Carry the file ``src`` over to ``dst`` without writing its bytes from this process: a
        hard link locally, a server-side CopyObject on S3 (lake files are immutable, so sharing
        them is safe)."""
        if self.is_s3:
            self.s3_call(
                "write",
                dst,
                lambda: self.s3_client.copy_object(
                    Bucket=self.bucket,
                    Key=self.key(dst),
                    CopySource={"Bucket": self.bucket, "Key": self.key(src)},
                ),
            )
            return
        target = self.local_path(dst)
        with self.local_errors("write", dst):
            target.parent.mkdir(parents=True, exist_ok=True)
            self._link_or_copy(self.local_path(src), target)

    def _link_or_copy(self, src: Path, target: Path) -> None:
        target.unlink(missing_ok=True)
        try:
            os.link(src, target)
        except OSError:  # a filesystem without hard links: copy (still correct, costs bytes)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)

    def size(self, rel: str) -> int:
        """The size in bytes of the file at ``rel``."""
        if self.is_s3:
            head = self.s3_call(
                "read",
                rel,
                lambda: self.s3_client.head_object(Bucket=self.bucket, Key=self.key(rel)),
            )
            return int(head["ContentLength"])
        return self.local_path(rel).stat().st_size

    def s3_credentials(self) -> Any:
        """The frozen credentials (access_key, secret_key, token) the S3 client signs with, for
        readers outside boto3 (pyarrow, pyiceberg); None without any."""
        # botocore gives no public accessor for a client's credentials
        creds = self.s3_client._request_signer._credentials
        return creds.get_frozen_credentials() if creds else None

    # -- readers ---------------------------------------------------------------------------

    def arrow_filesystem(self) -> tuple[Any, str]:
        """A pyarrow filesystem and the base path of the root within it."""
        import pyarrow.fs as pafs

        if not self.is_s3:
            return pafs.LocalFileSystem(), self.root
        endpoint = self.s3_client.meta.endpoint_url
        frozen = self.s3_credentials()
        kwargs: dict[str, Any] = {"region": self.s3_client.meta.region_name}
        if frozen:
            kwargs.update(
                access_key=frozen.access_key,
                secret_key=frozen.secret_key,
                session_token=frozen.token,
            )
        if endpoint and "amazonaws.com" not in endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host, scheme=scheme)
        fs = pafs.S3FileSystem(**kwargs)
        return fs, "/".join(p for p in (self.bucket, self.prefix) if p)

    # -- errors ------------------------------------------------------------------------------

    @contextmanager
    def local_errors(self, action: str, rel: str) -> Iterator[None]:
        try:
            yield
        except PermissionError:
            raise LakeError(
                f"Cannot {action} {rel!r} under lake root {self.root!r}: permission denied.",
                fix="make the lake root writable by this user or set DYNAMO_CDC_LAKE_ROOT.",
            ) from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise LakeError(
                    f"Cannot {action} {rel!r} under lake root {self.root!r}: the disk is full.",
                    fix="free space or point DYNAMO_CDC_LAKE_ROOT at a larger volume.",
                ) from None
            if exc.errno in (errno.EROFS, errno.EACCES, errno.ENOTDIR, errno.EEXIST):
                raise LakeError(
                    f"Cannot {action} {rel!r} under lake root {self.root!r}: {exc.strerror}.",
                    fix="make the lake root writable or set DYNAMO_CDC_LAKE_ROOT.",
                ) from None
            raise

    def s3_call(self, action: str, rel: str, fn: Any, *, missing_ok: bool = False) -> Any:
        """Run an S3 call; its errors become :class:`LakeError` (or CredentialsError)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from dynamo_cdc.aws import raise_if_credentials

        try:
            return fn()
        except (ClientError, BotoCoreError) as exc:
            raise_if_credentials(exc, f"{action} {self.uri(rel)}")
            code = (
                exc.response.get("Error", {}).get("Code", "")
                if isinstance(exc, ClientError)
                else type(exc).__name__
            )
            if missing_ok and code in ("NoSuchKey", "404"):
                raise MissingObject from None
            permission = {
                "read": "s3:GetObject",
                "list": "s3:ListBucket",
                "delete": "s3:DeleteObject",
            }.get(action, "s3:PutObject")
            raise LakeError(
                f"Cannot {action} {self.uri(rel)}: S3 answered {code}.",
                fix=f"check that bucket {self.bucket!r} exists and that the credentials may "
                f"{permission} there.",
            ) from None
