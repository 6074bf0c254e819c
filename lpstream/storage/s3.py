"""An object store in S3-compatible storage (AWS, MinIO, Ceph, R2, …) through boto3.

How this works: one boto3 client per store, made on first use in a worker thread (it loads
its service model and finds credentials through boto3's usual chain: the ``AWS_*``
variables, ``AWS_PROFILE`` and the shared files, instance roles). The client is thread-safe;
every call runs in ``trio.to_thread.run_sync`` behind one ``CapacityLimiter`` per store.
botocore retries what can be retried (connection errors, throttling, 5xx) with its standard
backoff, and the short connect and read timeouts make a dead store fail in seconds rather than
minutes. Objects at or above the multipart size go up in parts through boto3's transfer
manager; smaller ones in one ``PutObject``. Whatever botocore or boto3 raise is mapped to
:class:`StoreError` here (:class:`StoreUnavailable` when the store cannot be reached or
refuses the node) and never leaks.

Object names are ``prefix/key``; keys go through :func:`check_key` first, so no key can name
an object outside the prefix.
"""

from __future__ import annotations

import builtins
import functools
import io
import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlencode, urlsplit

import boto3
import botocore.config
import botocore.exceptions
import trio
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig

from lpstream.errors import ConfigError

from .store import (
    MAX_KEY_LENGTH,
    InvalidKey,
    ObjectInfo,
    StoreError,
    StoreUnavailable,
    check_key,
    is_key,
)

__all__ = [
    "DEFAULT_MULTIPART_MB",
    "MAX_MULTIPART_MB",
    "MIN_MULTIPART_MB",
    "Addressing",
    "S3Store",
    "check_bucket_name",
]

_T = TypeVar("_T")

MIB = 1024 * 1024
DEFAULT_MULTIPART_MB = 8
"""Objects this many MiB or larger are uploaded in parts."""
MIN_MULTIPART_MB = 5
"""S3's smallest part (every part but the last must be at least 5 MiB)."""
MAX_MULTIPART_MB = 5 * 1024
"""S3's largest part."""
_MAX_NAME = 1024
"""S3's longest object name, so the prefix leaves room for the longest key."""
_PART_CONCURRENCY = 4
"""Parts of one multipart upload sent at once."""

Addressing = Literal["path", "virtual"]

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CREDENTIAL_CODES = frozenset(
    {
        "403",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "InvalidClientTokenId",
    }
)
_CHECKING = "check the bucket"
_MISSING_KEY_CODES = frozenset({"404", "NoSuchKey"})
_NO_CREDENTIALS = (
    "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
)
_UNREACHABLE = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)
_CLIENT_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, Boto3Error)


def check_bucket_name(name: str) -> str:
    """``name`` if S3 accepts it as a bucket name: 3 to 63 lowercase letters, digits, ``.``
    and ``-``, starting and ending with a letter or digit, no ``..``, ``.-`` or ``-.``, not
    an IP address, none of the reserved prefixes and suffixes.

    Raises:
        ConfigError: it is not one.
    """
    problem = None
    if not _BUCKET.fullmatch(name):
        problem = "3 to 63 of a-z 0-9 . -, starting and ending with a letter or digit"
    elif ".." in name or ".-" in name or "-." in name:
        problem = "no '..', '.-' or '-.'"
    elif _is_ip_address(name):
        problem = "not an IP address"
    elif name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(
        ("-s3alias", "--ol-s3", "--x-s3", ".mrap")
    ):
        problem = "a reserved prefix or suffix"
    if problem:
        raise ConfigError(f"bucket name {name[:80]!r} is not valid for S3 ({problem})")
    return name


class S3Store:
    """:class:`~lpstream.storage.ObjectStore` in a bucket of S3-compatible storage.

    Args:
        bucket: the bucket (it must exist; :meth:`check` says if it does not).
        prefix: objects are named ``prefix/key`` (``""``: ``key``).
        endpoint: the service's URL (MinIO, Ceph, R2, moto…); None for AWS.
        region: the signing region; None for boto3's default (``AWS_DEFAULT_REGION``, the
            profile, ``us-east-1``).
        addressing: ``path`` (``ENDPOINT/bucket/key``) or ``virtual``
            (``bucket.HOST/key``); None: ``path`` with an endpoint, boto3's choice for AWS.
        multipart_mb: objects this large (MiB) or larger go up in parts of this size.
        max_attempts: tries per request, the first included (botocore's standard retries).
        connect_timeout: seconds to open a connection.
        read_timeout: seconds to wait for a response's bytes.
        max_threads: requests running at once.

    Raises:
        ConfigError: an option that cannot be used.
    """

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        addressing: Addressing | None = None,
        multipart_mb: int = DEFAULT_MULTIPART_MB,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_threads: int = 8,
    ) -> None:
        self._bucket = check_bucket_name(bucket)
        self._prefix = _check_store_prefix(prefix)
        self._endpoint = _check_endpoint(endpoint) if endpoint is not None else None
        if region is not None and not re.fullmatch(r"[a-z0-9-]{1,32}", region):
            raise ConfigError(f"region {region[:40]!r} is not a region name")
        self._region = region
        if addressing not in (None, "path", "virtual"):
            raise ConfigError(f"addressing {addressing!r}: use 'path' or 'virtual'")
        self._addressing: Addressing | None = addressing
        if not MIN_MULTIPART_MB <= multipart_mb <= MAX_MULTIPART_MB:
            raise ConfigError(
                f"multipart size of {multipart_mb} MiB (at least {MIN_MULTIPART_MB}, S3's "
                f"smallest part, at most {MAX_MULTIPART_MB}, its largest)"
            )
        self._multipart_mb = multipart_mb
        if max_attempts < 1 or connect_timeout <= 0 or read_timeout <= 0 or max_threads < 1:
            raise ConfigError("S3 attempts, timeouts and threads must be positive")
        self._config = botocore.config.Config(
            region_name=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=max_threads * _PART_CONCURRENCY,
            s3={"addressing_style": self._effective_addressing or "auto"},
            # Checksums only where the API requires them: several S3-compatible stores
            # refuse the CRC headers newer botocore adds to every upload by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_mb * MIB,
            multipart_chunksize=multipart_mb * MIB,
            max_concurrency=_PART_CONCURRENCY,
        )
        self._limiter = trio.CapacityLimiter(max_threads)
        self._client_lock = trio.Lock()
        self._client: Any = None

    @property
    def bucket(self) -> str:
        """The bucket."""
        return self._bucket

    @property
    def prefix(self) -> str:
        """The prefix of every object name (``""``: none)."""
        return self._prefix

    @property
    def endpoint(self) -> str | None:
        """The service's URL; None for AWS."""
        return self._endpoint

    @property
    def url(self) -> str:
        """``s3://bucket/prefix?endpoint=…`` with the options that differ from the defaults
        (never credentials); :func:`~lpstream.storage.open_store` takes it back."""
        query: dict[str, str] = {}
        if self._endpoint is not None:
            query["endpoint"] = self._endpoint
        if self._region is not None:
            query["region"] = self._region
        if self._addressing is not None:
            query["addressing"] = self._addressing
        if self._multipart_mb != DEFAULT_MULTIPART_MB:
            query["multipart_mb"] = str(self._multipart_mb)
        tail = f"?{urlencode(query, safe=':/')}" if query else ""
        return f"s3://{self._bucket}/{self._prefix}{tail}"

    def public_url(self, key: str) -> str:
        """The object's plain HTTP URL at the service (readable by a player where the bucket
        allows anonymous reads, or through a CDN in front of it)."""
        name = self._name_of(key)
        if self._endpoint is not None:
            base = self._endpoint.rstrip("/")
            if self._effective_addressing == "virtual":
                parts = urlsplit(base)
                return f"{parts.scheme}://{self._bucket}.{parts.netloc}{parts.path}/{name}"
            return f"{base}/{self._bucket}/{name}"
        host = f"s3.{self._region}.amazonaws.com" if self._region else "s3.amazonaws.com"
        if self._addressing == "path":
            return f"https://{host}/{self._bucket}/{name}"
        return f"https://{self._bucket}.{host}/{name}"

    def __repr__(self) -> str:
        return f"S3Store({self.url})"

    async def check(self) -> None:
        """Asks the service for the bucket (``HeadBucket``).

        Raises:
            StoreUnavailable: the bucket does not exist, the credentials are missing or
                refused, or the endpoint cannot be reached; the message says which.
        """
        try:
            await self._run(
                _CHECKING,
                lambda client: client.head_bucket(Bucket=self._bucket),
                abandon_on_cancel=True,
            )
        except StoreUnavailable:
            raise
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def put(self, key: str, data: bytes, *, content_type: str, cache_control: str) -> None:
        """Uploads ``data`` as ``prefix/key`` with its ``Content-Type`` and ``Cache-Control``
        (in parts at or above the multipart size; S3 shows an object only once it is whole).

        Raises:
            StoreError: a bad key, or the upload failed after the retries.
        """
        name = self._name_of(key)
        extra = {"ContentType": content_type, "CacheControl": cache_control}

        def upload(client: Any) -> None:
            if len(data) >= self._transfer.multipart_threshold:
                client.upload_fileobj(
                    io.BytesIO(data), self._bucket, name, ExtraArgs=extra, Config=self._transfer
                )
            else:
                client.put_object(Bucket=self._bucket, Key=name, Body=data, **extra)

        await self._run(f"upload {key!r}", upload)

    async def get(self, key: str) -> bytes | None:
        """The object's bytes; None if there is none.

        Raises:
            StoreError: a bad key, or the service failed.
        """
        name = self._name_of(key)

        def download(client: Any) -> bytes | None:
            try:
                response = client.get_object(Bucket=self._bucket, Key=name)
            except botocore.exceptions.ClientError as exc:
                if _error_code(exc) in _MISSING_KEY_CODES:
                    return None
                raise
            body = response["Body"]
            try:
                return cast(bytes, body.read())
            finally:
                body.close()

        return await self._run(f"download {key!r}", download, abandon_on_cancel=True)

    async def list(self, prefix: str) -> Sequence[ObjectInfo]:
        """Every object under the store's prefix whose key starts with ``prefix``, in key
        order (objects whose names are not keys, written there by something else, are left
        out).

        Raises:
            StoreError: a bad prefix, or the service failed.
        """
        if prefix:
            check_key(prefix[:-1] if prefix.endswith("/") else prefix)
        start = len(self._prefix)

        def listing(client: Any) -> builtins.list[ObjectInfo]:
            found: builtins.list[ObjectInfo] = []
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix + prefix):
                for item in page.get("Contents", ()):
                    key = str(item["Key"])[start:]
                    if is_key(key):
                        found.append(ObjectInfo(key, int(item["Size"]), _timestamp(item)))
            found.sort(key=lambda info: info.key)
            return found

        return await self._run(f"list {prefix!r}", listing, abandon_on_cancel=True)

    async def delete(self, key: str) -> None:
        """Removes ``prefix/key``; nothing happens if there is none.

        Raises:
            StoreError: a bad key, or the service failed.
        """
        name = self._name_of(key)
        await self._run(
            f"delete {key!r}", lambda client: client.delete_object(Bucket=self._bucket, Key=name)
        )

    # -- the client, in threads ------------------------------------------------------------

    @property
    def _effective_addressing(self) -> Addressing | None:
        if self._addressing is None and self._endpoint is not None:
            return "path"
        return self._addressing

    def _name_of(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def _run(
        self, doing: str, call: Callable[[Any], _T], *, abandon_on_cancel: bool = False
    ) -> _T:
        try:
            client = await self._ensure_client()
            return await trio.to_thread.run_sync(
                functools.partial(call, client),
                limiter=self._limiter,
                abandon_on_cancel=abandon_on_cancel,
            )
        except _CLIENT_ERRORS as exc:
            raise self._mapped(exc, doing) from exc

    async def _ensure_client(self) -> Any:
        async with self._client_lock:
            if self._client is None:
                self._client = await trio.to_thread.run_sync(self._new_client)
            return self._client

    def _new_client(self) -> Any:
        session = boto3.session.Session()
        return session.client("s3", endpoint_url=self._endpoint, config=self._config)

    def _where(self) -> str:
        if self._endpoint is not None:
            return self._endpoint
        return f"AWS S3 ({self._region})" if self._region else "AWS S3"

    def _mapped(self, exc: Exception, doing: str) -> StoreError:
        """Our error for a boto3/botocore one, saying what we were doing and what went wrong."""
        where = self._where()
        if isinstance(
            exc,
            botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError,
        ):
            return StoreUnavailable(_NO_CREDENTIALS)
        if isinstance(exc, botocore.exceptions.ProfileNotFound):
            return StoreUnavailable(f"no AWS credentials: {exc}")
        if isinstance(exc, _UNREACHABLE):
            return StoreUnavailable(f"cannot reach {where} to {doing}: {exc}")
        if isinstance(exc, botocore.exceptions.ClientError):
            code = _error_code(exc)
            if code in _CREDENTIAL_CODES:
                return StoreUnavailable(
                    f"credentials refused by {where} for bucket {self._bucket} ({code}): check "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
                )
            # HeadBucket has no body, so a missing bucket is a bare 404 there.
            if code == "NoSuchBucket" or (code == "404" and doing == _CHECKING):
                return StoreUnavailable(f"bucket {self._bucket} does not exist at {where}")
            message = exc.response.get("Error", {}).get("Message") or ""
            return StoreError(f"{where} refused to {doing}: {code} {message}".rstrip())
        return StoreError(f"could not {doing} at {where}: {exc}")


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _timestamp(item: Any) -> float:
    return float(item["LastModified"].timestamp())


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _check_store_prefix(prefix: str) -> str:
    """``"a/b"`` or ``"a/b/"`` as ``"a/b/"`` (``""`` stays ``""``)."""
    bare = prefix.strip("/")
    if not bare:
        return ""
    if len(bare) >= _MAX_NAME - MAX_KEY_LENGTH:
        raise ConfigError(
            f"S3 prefix of {len(bare)} characters (at most {_MAX_NAME - MAX_KEY_LENGTH - 1})"
        )
    try:
        check_key(bare)
    except InvalidKey:
        raise ConfigError(
            f"S3 prefix {prefix[:80]!r} is not a path of letters, digits, '.', '_' and '-'"
        ) from None
    return bare + "/"


def _check_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"S3 endpoint {endpoint[:80]!r}: use http://HOST[:PORT] or https://…")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "S3 endpoint with credentials in it: give them in AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"S3 endpoint {endpoint[:80]!r} has a query or fragment")
    return endpoint.rstrip("/")
