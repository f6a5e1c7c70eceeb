"""An S3-compatible bucket (AWS S3, minio, moto) through boto3, as :class:`~slimbert.store.blobs.Blobs`.

Credentials and region come from boto3's own chain (``AWS_ACCESS_KEY_ID`` and friends, a profile, an
instance role), so no secret passes through the settings. S3 is strongly consistent for a read after a
write and for listings, which is what publishing a manifest last relies on.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from slimbert.errors import StoreError
from slimbert.store.blobs import Blob

_MISSING = {"404", "NoSuchKey", "NotFound"}
HINT = "check SLIMBERT_STORE_URL, SLIMBERT_S3_ENDPOINT_URL and the AWS credentials of this host"


def make_client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client; path-style addressing for a custom endpoint (minio, moto), which has no
    per-bucket DNS names. One per endpoint and process: building one costs milliseconds (the API opens a
    store per request on some routes), clients are thread-safe, but a client must not cross a fork
    (Celery's prefork children each build their own)."""
    return _client(endpoint_url, os.getpid())


@functools.lru_cache(maxsize=16)
def _client(endpoint_url: str | None, pid: int) -> Any:
    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=60,
                    s3={"addressing_style": "path"} if endpoint_url else None)
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


class S3Blobs:
    """Objects under ``s3://<bucket>/<prefix>/``; keys are relative to the prefix."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def child(self, sub: str) -> S3Blobs:
        """The same bucket, one folder down: each kind of record gets its own prefix."""
        return S3Blobs(self.client, self.bucket, f"{self.prefix}/{sub}" if self.prefix else sub)

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, what: str, key: str, exc: Exception) -> StoreError:
        return StoreError(f"the bucket failed to {what} {self.url(key)}: {exc}", hint=HINT)

    # --- Blobs ---------------------------------------------------------------------------------
    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> bool:
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if exclusive and code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise self._fail("write", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("write", key, exc) from exc
        return True

    def get(self, key: str) -> bytes | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return bytes(body.read())
        except ClientError as exc:
            if _missing(exc):
                return None
            raise self._fail("read", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("read", key, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if _missing(exc):
                return False
            raise self._fail("look up", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("look up", key, exc) from exc

    def list(self, prefix: str = "") -> list[Blob]:
        base = f"{self.prefix}/" if self.prefix else ""
        return [Blob(obj["Key"][len(base):], obj["LastModified"].timestamp(), str(obj["ETag"]))
                for obj in self._objects(base + prefix)]

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"the bucket failed to list s3://{self.bucket}/{prefix}: {exc}", hint=HINT) from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("delete", key, exc) from exc

    # --- files ---------------------------------------------------------------------------------
    def upload(self, key: str, path: Path) -> None:
        """One file; boto3 splits a large one into parts, and the object appears only when all are in."""
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("write", key, exc) from exc

    def download(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self._key(key), str(path))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("read", key, exc) from exc

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; returns how many went."""
        keys = [obj["Key"] for obj in self._objects(self._key(prefix))]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            try:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except (ClientError, BotoCoreError) as exc:
                raise self._fail("delete", prefix, exc) from exc
        return len(keys)

    def reachable(self) -> bool:
        """Whether the bucket answers a listing with these credentials (readiness)."""
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(""), MaxKeys=1)
            return True
        except (ClientError, BotoCoreError):
            return False
