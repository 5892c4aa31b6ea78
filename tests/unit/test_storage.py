"""Local content-addressed storage, and how settings choose a storage."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest
from pydantic import ValidationError as SettingsError

from semantest.config import Settings
from semantest.errors import ImageNotFound, ValidationError
from semantest.storage import LocalStorage, content_type_of, parse_key, storage_from_settings

pytestmark = pytest.mark.unit


async def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    data = b"\x89PNG fake but bytes are bytes"
    first = await storage.put("acme", data, "image/png")
    digest = hashlib.sha256(data).hexdigest()
    assert first.key == f"acme/{digest}.png" and first.sha256 == digest
    assert first.size == len(data)
    again = await storage.put("acme", data, "image/png")
    assert again == first
    assert await storage.get(first.key) == data
    assert storage.path_for(first.key).read_bytes() == data
    assert [p.name for p in (tmp_path / "acme").iterdir()] == [f"{digest}.png"]  # no temp left


async def test_tenants_are_separate_folders(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    a = await storage.put("a", b"same", "image/png")
    b = await storage.put("b", b"same", "image/png")
    assert a.key != b.key and a.sha256 == b.sha256


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "acme/../../x.png", "acme/abc.png", "/abs/" + "0" * 64 + ".png", ""]
)
async def test_keys_that_are_not_ours_are_not_found(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(ImageNotFound):
        await storage.get(key)


async def test_missing_key_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound):
        await LocalStorage(tmp_path).get("acme/" + "0" * 64 + ".png")


async def test_rejects_non_images_and_bad_tenants(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(ValidationError, match="content type"):
        await storage.put("acme", b"x", "text/html")
    with pytest.raises(ValidationError, match="tenant"):
        await storage.put("../up", b"x", "image/png")


def test_key_parts() -> None:
    key = "t1/" + "ab" * 32 + ".jpg"
    assert parse_key(key) == ("t1", "ab" * 32, "jpg")
    assert content_type_of(key) == "image/jpeg"


async def test_local_serves_through_the_controller(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "images")
    stored = await storage.put("acme", b"bytes", "image/png")
    assert await storage.exists(stored.key)
    assert not await storage.exists("acme/" + "0" * 64 + ".png")
    assert storage.public_url(stored.key) is None and await storage.signed_url(stored.key) is None
    assert await storage.check() == "ok"


def test_settings_choose_local_by_default(tmp_path: Path) -> None:
    storage = storage_from_settings(Settings(data_dir=tmp_path))
    assert isinstance(storage, LocalStorage) and storage.root == tmp_path / "images"


def test_s3_without_a_bucket_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="s3_bucket"):
        Settings(storage="s3")


def test_s3_prefix_is_a_folder_and_cdn_has_no_trailing_slash() -> None:
    settings = Settings(
        storage="s3", s3_bucket="b", s3_prefix="/imgs", cdn_base_url="https://cdn.example/"
    )
    assert settings.s3_prefix == "imgs/" and settings.cdn_base_url == "https://cdn.example"
    assert Settings(s3_prefix="/").s3_prefix == ""


def test_writes_are_staged_outside_the_keys_and_leftovers_swept(tmp_path: Path) -> None:
    """A process killed mid-write leaves its partial file in `.partial/`, never under a key;
    the sweep removes only staged files older than its threshold."""
    storage = LocalStorage(tmp_path)
    stored = asyncio.run(storage.put("t1", b"\x89PNG fake", "image/png"))
    assert [p.name for p in (tmp_path / "t1").iterdir()] == [stored.key.split("/")[1]]
    old = storage.partial / "dead.old.tmp"
    fresh = storage.partial / "dead.fresh.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert storage.sweep_partial(older_than_s=600) == 1
    assert not old.exists() and fresh.exists()
