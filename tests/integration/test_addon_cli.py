"""`semantest addons list | publish DIR | promote | rollback` as a user runs them: a real
subprocess against a real controller on Redis database 62."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from semantest.config import Settings
from semantest.stack import free_port
from tests.conftest import ADMIN_KEY, serve_controller

pytestmark = pytest.mark.integration

DB = 62
SEMANTEST = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "semantest")


@pytest.fixture(scope="module")
def base(api_settings: Settings, redis_url: str) -> Iterator[str]:
    url = f"{redis_url.rsplit('/', 1)[0]}/{DB}"
    redis.Redis.from_url(url).flushdb()
    with serve_controller(
        api_settings.model_copy(update={"redis_url": url, "port": free_port()})
    ) as found:
        yield found


def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEMANTEST_")}
    env |= {"SEMANTEST_URL": url, "SEMANTEST_API_KEY": ADMIN_KEY, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [SEMANTEST, "addons", *args], env=env, capture_output=True, text=True, timeout=60
    )


def addon_folder(root: Path, version: str, code: str) -> Path:
    folder = root / version
    folder.mkdir()
    manifest = {
        "id": "clidemo",
        "name": "CLI demo",
        "version": version,
        "matches": ["https://example.com/*"],
        "js": ["driver.js"],
    }
    (folder / "addon.json").write_text(json.dumps(manifest))
    (folder / "driver.js").write_text(code)
    return folder


def test_publish_list_promote_rollback(base: str, tmp_path: Path) -> None:
    first = run(base, "publish", str(addon_folder(tmp_path, "1.0.0", "ok();\n")))
    assert first.returncode == 0, first.stderr
    assert "published: clidemo@1.0.0" in first.stdout and "stable: 1.0.0" in first.stdout
    assert run(base, "publish", str(addon_folder(tmp_path, "1.1.0", "ok(1);\n"))).returncode == 0
    listed = run(base, "list")
    assert listed.returncode == 0 and any(
        line.split()[:2] == ["clidemo", "1.1.0"] for line in listed.stdout.splitlines()
    )
    back = run(base, "rollback", "clidemo", "--channel", "stable")
    assert back.returncode == 0 and "stable: 1.0.0" in back.stdout
    assert httpx.get(base + "/api/v1/addons/clidemo").headers["x-addon-version"] == "1.0.0"
    again = run(base, "promote", "clidemo", "1.1.0", "--json")
    assert json.loads(again.stdout)["channels"]["stable"] == "1.1.0"


def test_errors_name_the_file_and_line(base: str, tmp_path: Path) -> None:
    broken = run(base, "publish", str(addon_folder(tmp_path, "2.0.0", "ok();\nfunction (\n")))
    assert broken.returncode == 3
    assert "files.driver.js" in broken.stderr and "line 2" in broken.stderr
    missing = run(base, "publish", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "addon.json" in missing.stderr
    unknown = run(base, "rollback", "nosuchaddon")
    assert unknown.returncode == 3 and "ADDON_NOT_FOUND" in unknown.stderr
