"""Object storage for recordings and the live origin: a local directory or S3-compatible
storage behind one interface, chosen by URL (see :mod:`lpstream.storage.store`)."""

from __future__ import annotations

from lpstream.storage.local import LocalStore
from lpstream.storage.s3 import (
    DEFAULT_MULTIPART_MB,
    MAX_MULTIPART_MB,
    MIN_MULTIPART_MB,
    Addressing,
    S3Store,
    check_bucket_name,
)
from lpstream.storage.store import (
    MAX_KEY_LENGTH,
    InvalidKey,
    ObjectInfo,
    ObjectStore,
    StoreError,
    StoreUnavailable,
    check_key,
    content_type_of,
)
from lpstream.storage.urls import STORE_URL_FORMS, open_store

__all__ = [
    "DEFAULT_MULTIPART_MB",
    "MAX_KEY_LENGTH",
    "MAX_MULTIPART_MB",
    "MIN_MULTIPART_MB",
    "STORE_URL_FORMS",
    "Addressing",
    "InvalidKey",
    "LocalStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Store",
    "StoreError",
    "StoreUnavailable",
    "check_bucket_name",
    "check_key",
    "content_type_of",
    "open_store",
]
