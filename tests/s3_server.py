"""moto's real S3 server on 127.0.0.1 for the bucket tests: boto3 talks HTTP to it, nothing is mocked.

Import the fixtures into a test module (``from tests.s3_server import moto_endpoint, s3_env  # noqa: F401``);
without moto installed every test that uses them is skipped with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """http://127.0.0.1:<port> of a moto S3 server that lives for the test session."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """boto3's standard variables, as a host would have them; worker processes inherit them."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return dict(CREDENTIALS)


def raw_client(endpoint: str) -> Any:
    """A plain boto3 client for what a test does behind the store's back (make a bucket, damage an object)."""
    import boto3  # here: only the bucket tests need boto3, and they are skipped without moto

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def new_bucket(endpoint: str) -> str:
    """A fresh bucket per test, so tests sharing the server never see each other's objects."""
    name = f"slimbert-{uuid.uuid4().hex[:16]}"
    raw_client(endpoint).create_bucket(Bucket=name)
    return name
