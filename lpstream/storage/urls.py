"""The store a URL names: ``file:///abs/path`` or ``s3://bucket/prefix?endpoint=…``."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from lpstream.errors import ConfigError

from .local import LocalStore
from .s3 import DEFAULT_MULTIPART_MB, Addressing, S3Store
from .store import ObjectStore

__all__ = ["STORE_URL_FORMS", "open_store"]

STORE_URL_FORMS = (
    "file:///absolute/path, or "
    "s3://bucket[/prefix][?endpoint=http(s)://HOST[:PORT]&region=NAME"
    "&addressing=path|virtual&multipart_mb=N]"
)
"""The accepted forms, for messages and help texts."""

_S3_OPTIONS = ("endpoint", "region", "addressing", "multipart_mb")


def open_store(url: str) -> ObjectStore:
    """The store ``url`` names; nothing is contacted yet (call its ``check``).

    Raises:
        ConfigError: the URL is not one of :data:`STORE_URL_FORMS`, or an option in it
            cannot be used; the message says which.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _local_store(url)
    if scheme == "s3":
        return _s3_store(url)
    if not scheme:
        raise ConfigError(
            f"store {url[:100]!r} has no scheme: for a directory write "
            f"file:///absolute/path; accepted: {STORE_URL_FORMS}"
        )
    raise ConfigError(f"store URL scheme {scheme[:20]!r} is not known; accepted: {STORE_URL_FORMS}")


def _local_store(url: str) -> LocalStore:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"store {url[:100]!r} names host {parts.netloc[:60]!r}: a file: URL is a local "
            "directory, file:///absolute/path"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"store {url[:100]!r}: a file: URL takes no query or fragment")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ConfigError(f"store {url[:100]!r} is relative: write file:///absolute/path")
    if "\0" in path:
        raise ConfigError(f"store {url[:100]!r} has a NUL in its path")
    return LocalStore(Path(path))


def _s3_store(url: str) -> S3Store:
    parts = urlsplit(url)
    if "@" in parts.netloc or ":" in parts.netloc:
        raise ConfigError(
            "an s3: URL names only the bucket before its path: give credentials in "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), the service in "
            "?endpoint="
        )
    if not parts.netloc:
        raise ConfigError(f"store {url[:100]!r} names no bucket; accepted: {STORE_URL_FORMS}")
    if parts.fragment:
        raise ConfigError(f"store {url[:100]!r}: an s3: URL takes no fragment")
    options = _query_options(url, parts.query)
    multipart = options.get("multipart_mb", str(DEFAULT_MULTIPART_MB))
    if not re.fullmatch(r"[0-9]{1,6}", multipart):
        raise ConfigError(f"store {url[:100]!r}: multipart_mb is a whole number of MiB")
    return S3Store(
        bucket=parts.netloc,
        prefix=parts.path,
        endpoint=options.get("endpoint"),
        region=options.get("region"),
        addressing=_addressing(url, options.get("addressing")),
        multipart_mb=int(multipart),
    )


def _query_options(url: str, query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"store {url[:100]!r}: its query is not name=value&…") from None
    for name, value in pairs:
        if name not in _S3_OPTIONS:
            raise ConfigError(
                f"store {url[:100]!r}: unknown option {name[:40]!r} (known: "
                f"{', '.join(_S3_OPTIONS)})"
            )
        if name in options:
            raise ConfigError(f"store {url[:100]!r}: option {name!r} given twice")
        if not value:
            raise ConfigError(f"store {url[:100]!r}: option {name!r} is empty")
        options[name] = value
    return options


def _addressing(url: str, value: str | None) -> Addressing | None:
    if value is None:
        return None
    if value == "path":
        return "path"
    if value == "virtual":
        return "virtual"
    raise ConfigError(f"store {url[:100]!r}: addressing is 'path' or 'virtual'")
