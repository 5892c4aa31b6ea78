"""One contract for every storage backend: local files, and S3 against moto's standalone server.

The same tests run against each backend built by `storage_from_settings`; then, through a real
controller over real HTTP, a stored record's image URL must download the stored bytes whichever
backend holds them (S3: a 302 to a presigned URL of moto; with a CDN base: the CDN URL itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest
from pydantic import SecretStr

from semantest import keys
from semantest.config import Settings
from semantest.errors import ImageNotFound
from semantest.jobstore import JobStore
from semantest.models import ImageRecord, JobRecord, JobStatus
from semantest.redis_clients import async_client
from semantest.stack import free_port
from semantest.storage import Storage, storage_from_settings
from tests.conftest import ADMIN_KEY, serve_controller

pytestmark = pytest.mark.integration

BUCKET = "semantest-images"
PREFIX = "tests/"
MISSING = "admin/" + "0" * 64 + ".png"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port, with one bucket.

    boto3 reads its credentials from the environment as in production; these are moto's
    throw-away ones, and no shared config file or instance metadata is consulted.
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    nowhere = tmp_path_factory.mktemp("aws") / "none"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(nowhere),
        "AWS_SHARED_CREDENTIALS_FILE": str(nowhere),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            mp.delenv(name, raising=False)
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.05)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    proc.terminate()
    proc.wait(10)


def settings_for(backend: str, request: pytest.FixtureRequest, data_dir: Path) -> Settings:
    """Settings of a deployment on `backend`: local, s3, or s3 behind a CDN."""
    common = {
        "redis_url": request.getfixturevalue("redis_url"),
        "admin_key": SecretStr(ADMIN_KEY),
        "port": free_port(),
        "data_dir": data_dir,
        "chromium": None,
    }
    if backend == "local":
        return Settings(**common)
    endpoint = request.getfixturevalue("s3_endpoint")
    # The "CDN" is the bucket's own path-style URL on moto: anonymous GETs work there as they
    # would through a real CDN in front of the bucket.
    cdn = f"{endpoint}/{BUCKET}" if backend == "s3-cdn" else None
    return Settings(
        **common,
        storage="s3",
        s3_bucket=BUCKET,
        s3_prefix=PREFIX,
        s3_endpoint_url=endpoint,
        s3_region="us-east-1",
        s3_presign_expiry_s=120,
        cdn_base_url=cdn,
    )


def image_bytes() -> bytes:
    """Fresh bytes per test, so content-addressed keys never collide between tests."""
    return b"\x89PNG\r\n\x1a\n" + os.urandom(256)


# ---------------------------------------------------------------- the storage contract


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return storage_from_settings(settings_for(request.param, request, tmp_path))


async def test_put_then_get_returns_the_bytes_at_their_content_address(storage: Storage) -> None:
    data = image_bytes()
    stored = await storage.put("acme", data, "image/png")
    digest = hashlib.sha256(data).hexdigest()
    assert (stored.key, stored.sha256, stored.size) == (f"acme/{digest}.png", digest, len(data))
    assert stored.content_type == "image/png"
    assert await storage.get(stored.key) == data


async def test_put_is_idempotent(storage: Storage) -> None:
    data = image_bytes()
    first = await storage.put("acme", data, "image/jpeg")
    assert await storage.put("acme", data, "image/jpeg") == first
    assert await storage.get(first.key) == data


async def test_exists_and_missing_keys(storage: Storage) -> None:
    stored = await storage.put("acme", image_bytes(), "image/webp")
    assert await storage.exists(stored.key)
    assert not await storage.exists(MISSING)
    with pytest.raises(ImageNotFound):
        await storage.get(MISSING)
    with pytest.raises(ImageNotFound):  # not one of our keys: never reaches the backend
        await storage.get("../etc/passwd")


async def test_tenants_do_not_share_keys(storage: Storage) -> None:
    data = image_bytes()
    a, b = await storage.put("a", data, "image/png"), await storage.put("b", data, "image/png")
    assert a.key != b.key and a.sha256 == b.sha256


async def test_urls_and_readiness(storage: Storage) -> None:
    data = image_bytes()
    stored = await storage.put("acme", data, "image/png")
    assert storage.public_url(stored.key) is None  # no CDN: the controller serves it
    assert await storage.check() == "ok"
    signed = await storage.signed_url(stored.key)
    if signed is None:  # local: the controller serves the bytes itself
        return
    async with httpx.AsyncClient() as http:
        reply = await http.get(signed)
    assert reply.status_code == 200 and reply.content == data
    assert reply.headers["content-type"] == "image/png"
    with pytest.raises(ImageNotFound):
        await storage.signed_url(MISSING)


async def test_s3_readiness_names_a_missing_bucket(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    settings = settings_for("s3", request, tmp_path).model_copy(update={"s3_bucket": "absent"})
    assert await storage_from_settings(settings).check() == "error: 404"


# ---------------------------------------------------------------- through the controller


@dataclass
class Deployment:
    backend: str
    settings: Settings
    url: str


@pytest.fixture(scope="module", params=["local", "s3", "s3-cdn"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    settings = settings_for(request.param, request, tmp_path_factory.mktemp("data"))
    with serve_controller(settings) as url:
        yield Deployment(request.param, settings, url)


@pytest.fixture
async def api(deployment: Deployment) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=deployment.url, headers=headers, timeout=10) as c:
        yield c


async def stored_record(settings: Settings, data: bytes) -> JobRecord:
    """A succeeded job of tenant admin whose one image is `data`, written as an agent does."""
    stored = await storage_from_settings(settings).put("admin", data, "image/png")
    image = ImageRecord(
        key=stored.key,
        sha256=stored.sha256,
        width=1,
        height=1,
        content_type=stored.content_type,
        bytes=stored.size,
    )
    record = JobRecord(
        tenant="admin",
        provider="sandbox",
        prompt="contract",
        status=JobStatus.SUCCEEDED,
        progress=100,
        images=[image],
    )
    redis = async_client(settings.redis_url or "")
    try:
        await JobStore(redis).create(record)
        raw = await redis.get(keys.job(record.id))
    finally:
        await redis.aclose()
    assert raw is not None and json.loads(raw)["images"][0]["url"] is None  # stored: key only
    return record


async def test_a_records_image_url_downloads_the_stored_bytes(
    deployment: Deployment, api: httpx.AsyncClient
) -> None:
    data = image_bytes()
    record = await stored_record(deployment.settings, data)
    served = (await api.get(f"/api/v1/images/status/{record.id}")).json()
    (image,) = served["images"]
    key = image["key"]
    controller_url = f"{deployment.url}/api/v1/images/{key}"
    if deployment.backend == "s3-cdn":
        assert image["url"] == f"{deployment.settings.cdn_base_url}/{PREFIX}{key}"
    else:
        assert image["url"] == controller_url

    first = await api.get(image["url"])
    if deployment.backend == "local":
        assert first.status_code == 200
    elif deployment.backend == "s3":  # a presigned URL of the object, on moto
        assert first.status_code == 302
        location = first.headers["location"]
        assert location.startswith(f"{deployment.settings.s3_endpoint_url}/{BUCKET}/{PREFIX}{key}?")
        assert "X-Amz-Expires=120" in location
    # Following the URL (and any redirect: httpx drops the API key on the way to S3) gives the
    # exact bytes that were stored.
    final = await api.get(image["url"], follow_redirects=True)
    assert final.status_code == 200 and final.headers["content-type"] == "image/png"
    assert hashlib.sha256(final.content).hexdigest() == image["sha256"] == record.images[0].sha256
    # The controller URL works for every backend, CDN or not.
    via_controller = await api.get(controller_url, follow_redirects=True)
    assert via_controller.content == data


async def test_missing_images_and_other_tenants_are_not_found(
    deployment: Deployment, api: httpx.AsyncClient
) -> None:
    assert (await api.get(f"/api/v1/images/{MISSING}")).status_code == 404
    record = await stored_record(deployment.settings, image_bytes())
    other = record.images[0].key.replace("admin/", "acme/", 1)
    assert (await api.get(f"/api/v1/images/{other}")).status_code == 404


async def test_health_checks_the_configured_storage(api: httpx.AsyncClient) -> None:
    reply = await api.get("/api/v1/health")
    assert reply.status_code == 200 and reply.json()["storage"] == "ok"
