"""A real S3-compatible server on loopback, for the tests and the benchmarks of object storage.

moto's server mode (``ThreadedMotoServer``) runs in this process on a thread and speaks the S3
HTTP API; lpstream reaches it only over HTTP with its ordinary client and never knows what is
behind the endpoint. moto keeps buckets and objects in this process's memory, not in the
server, so :meth:`S3Server.stop` and :meth:`S3Server.start` take the endpoint away and bring
it back on the same port with its objects intact, as a restarted store would. The same memory
is shared by every server of the process: :func:`running_s3` empties and removes its bucket
when the block ends, so the next one starts clean.

The bucket is made publicly readable with a bucket policy (how an origin bucket behind a CDN
is set up), so :meth:`S3Server.object_url` can be fetched with a plain HTTP GET, as a player
would.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.config
from moto.server import ThreadedMotoServer

__all__ = ["REGION", "S3Server", "running_s3"]

REGION = "us-east-1"
"""The region every server of the harness says it is in."""

_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "lpstream-harness",
    "AWS_SECRET_ACCESS_KEY": "lpstream-harness-secret",
    "AWS_DEFAULT_REGION": REGION,
}


class S3Server:
    """A running S3-compatible endpoint on ``127.0.0.1`` with one bucket (see the module
    comment); made by :func:`running_s3`."""

    def __init__(self, *, port: int, bucket: str) -> None:
        self.port = port
        """The TCP port, kept across :meth:`stop` and :meth:`start`."""
        self.bucket = bucket
        """The bucket made at start."""
        self._server: ThreadedMotoServer | None = None
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS variables a subprocess needs to reach the server (any key is accepted)."""
        return dict(_CREDENTIALS)

    @property
    def running(self) -> bool:
        """Whether the endpoint is up."""
        return self._server is not None

    def store_url(self, prefix: str = "") -> str:
        """The ``s3://`` URL lpstream takes for this bucket, under ``prefix``."""
        return f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}&region={REGION}"

    def object_url(self, key: str) -> str:
        """The plain HTTP URL of the object named ``key`` in the bucket (the full name, with
        any store prefix)."""
        return f"{self.endpoint}/{self.bucket}/{key}"

    def client(self) -> Any:
        """A boto3 S3 client of the server, for asserts (short timeouts, few retries)."""
        if self._client is None:
            config = botocore.config.Config(
                region_name=REGION,
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
            )
            self._client = boto3.session.Session(**_session_credentials()).client(
                "s3", endpoint_url=self.endpoint, config=config
            )
        return self._client

    def start(self) -> None:
        """Brings the endpoint up on :attr:`port` (the objects are those it had)."""
        if self._server is not None:
            return
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self._server = server

    def stop(self) -> None:
        """Takes the endpoint down: its port refuses connections until :meth:`start`."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.stop()

    @contextmanager
    def refusing_credentials(self) -> Iterator[None]:
        """For the block, the server checks every request's signature against its own users,
        which the harness's keys are not: every request is refused (403,
        ``InvalidAccessKeyId``), as a store given wrong keys would. The harness's own
        :meth:`client` is refused too while inside."""
        self._set_auth_checks("0")
        try:
            yield
        finally:
            self._set_auth_checks("inf")

    def _set_auth_checks(self, after_requests: str) -> None:
        """moto checks signatures once it has served ``after_requests`` requests."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=after_requests.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def _create_bucket(self) -> None:
        client = self.client()
        if self.bucket in {item["Name"] for item in client.list_buckets().get("Buckets", ())}:
            self._remove_bucket()  # left by a block that ended with an error
        client.create_bucket(Bucket=self.bucket)
        public_read = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{self.bucket}/*",
                }
            ],
        }
        client.put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(public_read))

    def _remove_bucket(self) -> None:
        client = self.client()
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket):
            names = [{"Key": item["Key"]} for item in page.get("Contents", ())]
            if names:  # a page holds at most 1000, as many as one DeleteObjects takes
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": names})
        client.delete_bucket(Bucket=self.bucket)


@contextmanager
def running_s3(bucket: str = "lpstream") -> Iterator[S3Server]:
    """An S3 server on a free loopback port with ``bucket`` made, for the block.

    While inside, ``os.environ`` holds the harness's AWS variables (:attr:`S3Server.env`) so
    stores made in this process find credentials; they are put back afterwards. On leaving,
    the bucket is emptied and removed and the server stopped.
    """
    saved = {name: os.environ.get(name) for name in _CREDENTIALS}
    requests_log = logging.getLogger("werkzeug")
    saved_level = requests_log.level
    requests_log.setLevel(logging.WARNING)  # not one line per request
    os.environ.update(_CREDENTIALS)
    server = S3Server(port=_free_tcp_port(), bucket=bucket)
    try:
        server.start()
        server._create_bucket()
        yield server
        server.start()
        server._remove_bucket()
    finally:
        server.stop()
        requests_log.setLevel(saved_level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _session_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": _CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": _CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": REGION,
    }


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
