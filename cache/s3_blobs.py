"""The cold tier's blob store on an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, Ceph).

Keys are those of the port, already opaque (an HMAC prefix per area, a random name per
blob), under the deployment's own prefix; values are sealed ciphertext.  Transient errors
(connection refused or reset, throttling, 5xx) are retried by botocore's "standard" mode
with exponential backoff and jitter; what still fails is a BlobStoreError, which the API
answers with 503 and Retry-After.  Deletes delete the objects themselves: purge and shred
never rely on a lifecycle rule, and a versioned bucket is refused by `check` because a
delete there only hides the data behind a marker.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final, TypeVar

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cache.blobs import BlobStoreError, checked_key
from cache.settings import CacheSettings, S3Location

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# DeleteObjects takes at most this many keys a call.
_DELETE_BATCH: Final = 1000
_MISSING: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_T = TypeVar("_T")


def _client(settings: CacheSettings, config: Config) -> S3Client:
    key_id, secret = settings.blob_access_key_id, settings.blob_secret_access_key
    client: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.blob_endpoint_url,
        region_name=settings.blob_region or "us-east-1",
        aws_access_key_id=key_id.get_secret_value() if key_id else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=config,
    )
    return client


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3BlobStore:
    def __init__(self, location: S3Location, settings: CacheSettings) -> None:
        self.bucket = location.bucket
        self.prefix = location.prefix
        # Path-style addressing works with every S3-compatible server (virtual hosts need DNS).
        addressing = {"addressing_style": "path"} if settings.blob_endpoint_url else {}
        self._s3 = _client(
            settings,
            Config(
                retries={"mode": "standard", "max_attempts": settings.blob_max_attempts},
                connect_timeout=5,
                read_timeout=30,
                s3=addressing,  # type: ignore[arg-type]
            ),
        )
        # Readiness must answer within the probe's deadline: one attempt, short timeouts.
        self._probe = _client(
            settings,
            Config(
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=1,
                read_timeout=2,
                s3=addressing,  # type: ignore[arg-type]
            ),
        )
        self._transfer = TransferConfig(
            multipart_threshold=settings.blob_multipart_bytes,
            multipart_chunksize=settings.blob_multipart_bytes,
            use_threads=False,  # a worker's threads are its own; parts go one after another
        )

    def _object(self, key: str) -> str:
        return self.prefix + checked_key(key)

    def _call(self, what: str, operation: Callable[[], _T]) -> _T:
        try:
            return operation()
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            # botocore's messages name the operation and the error, never the credentials.
            raise BlobStoreError(f"blob store: {what} failed: {exc}") from exc

    def put(self, key: str, data: bytes) -> None:
        name = self._object(key)
        # Multipart above the threshold: a large photo is sent in parts, each retried alone.
        self._call(
            "put",
            lambda: self._s3.upload_fileobj(
                io.BytesIO(data), self.bucket, name, Config=self._transfer
            ),
        )

    def get(self, key: str) -> bytes | None:
        name = self._object(key)

        def read() -> bytes | None:
            try:
                response = self._s3.get_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _error_code(exc) in _MISSING:
                    return None
                raise
            return response["Body"].read()

        return self._call("get", read)

    def delete(self, key: str) -> bool:
        name = self._object(key)

        def delete() -> bool:
            try:
                self._s3.head_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _error_code(exc) in _MISSING:
                    return False
                raise
            self._s3.delete_object(Bucket=self.bucket, Key=name)
            return True

        return self._call("delete", delete)

    def _names(self, prefix: str) -> Iterator[str]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"]

    def delete_prefix(self, prefix: str) -> int:
        if prefix:
            checked_key(prefix.rstrip("/"))

        def delete_all() -> int:
            names = list(self._names(prefix))
            for start in range(0, len(names), _DELETE_BATCH):
                batch = names[start : start + _DELETE_BATCH]
                response = self._s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": name} for name in batch], "Quiet": True},
                )
                if response.get("Errors"):
                    first = response["Errors"][0]
                    raise BlobStoreError(
                        f"blob store: {len(response['Errors'])} objects not deleted "
                        f"({first.get('Code')}: {first.get('Message')})"
                    )
            return len(names)

        return self._call("delete", delete_all)

    def keys(self, prefix: str = "") -> Iterator[str]:
        names = self._call("list", lambda: sorted(self._names(prefix)))
        for name in names:
            yield name.removeprefix(self.prefix)

    def check(self) -> None:
        try:
            versioning = self._probe.get_bucket_versioning(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise BlobStoreError(f"bucket {self.bucket!r} is not reachable: {exc}") from exc
        if versioning.get("Status") in {"Enabled", "Suspended"}:
            # A delete in a versioned bucket keeps the old versions: purge would not purge.
            raise BlobStoreError(
                f"bucket {self.bucket!r} has versioning on: a deleted blob would survive as "
                "an old version, so purge and shred could not keep their promise"
            )
