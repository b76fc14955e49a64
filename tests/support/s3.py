"""moto's S3 server on loopback: an object store that Ray nodes and the registry reach by URL,
so a test proves that nothing passes through a shared disk."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def moto_s3(bucket: str = "reg") -> Iterator[dict[str, str]]:
    """Start the server with ``bucket``; yields the AWS environment that reaches it (also set
    in ``os.environ`` for the block, then restored).

    s3fs caches its filesystems by their arguments, not by the environment: one made
    against an earlier server of the session (another port) would still be handed out, so
    the cache is cleared when the server starts and when it stops."""
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    S3FileSystem.clear_instance_cache()
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import boto3  # type: ignore[import-untyped]

        boto3.client("s3").create_bucket(Bucket=bucket)
        yield env
    finally:
        server.stop()
        S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
