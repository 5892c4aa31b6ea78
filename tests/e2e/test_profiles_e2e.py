"""Profiles with real Chromium: the template, copies that start with user scripts on, the
login desk driving a real page. Prints the measured figures (run with `-s` to see them)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.async_api import Playwright, async_playwright

from browser_profiles import ProfileLock, ProfileLocked, ensure_template, open_profile
from browser_profiles.extension import (
    enable_user_scripts,
    launch_args,
    service_worker,
    user_scripts_defined,
)
from browser_profiles.templates import read_stamp
from extension_bridge import EXTENSION_DIR
from semantest.config import find_chromium
from semantest.stack import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = find_chromium() or ""


@pytest.fixture(scope="module")
def profiles_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert CHROMIUM, "Chromium is not installed: run `make setup`"
    return tmp_path_factory.mktemp("profiles")


@pytest.fixture(scope="module")
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
async def template(playwright: Playwright, profiles_root: Path) -> Path:
    """The template, prepared once for the module."""
    template_dir = profiles_root / "_template"
    started = time.perf_counter()
    await ensure_template(
        playwright, chromium=CHROMIUM, extension_dir=EXTENSION_DIR, template_dir=template_dir
    )
    print(f"\n[profiles] template prepared in {time.perf_counter() - started:.2f} s")
    return template_dir


async def cold_start(playwright: Playwright, profile: Path) -> tuple[float, bool, list[str]]:
    """Launch on `profile` until the service worker has `chrome.userScripts` (clicking the
    toggle only when needed). Returns (seconds, clicked, URLs of every page opened)."""
    opened: list[str] = []
    started = time.perf_counter()
    context = await playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True, args=launch_args(EXTENSION_DIR)
    )
    context.on("page", lambda page: opened.append(page.url or "about:blank"))
    try:
        worker = await service_worker(context)
        clicked = await enable_user_scripts(context, worker)
        took = time.perf_counter() - started
        assert await user_scripts_defined(worker)
        opened += [p.url for p in context.pages]
    finally:
        await context.close()
    return took, clicked, opened


async def test_template_is_prepared_once_and_reused(playwright: Playwright, template: Path) -> None:
    stamp = read_stamp(template)
    assert stamp is not None and stamp["chromium"] == CHROMIUM
    assert stamp["extensionDir"] == str(EXTENSION_DIR)
    mtime = (template / "semantest-template.json").stat().st_mtime_ns
    started = time.perf_counter()
    await ensure_template(
        playwright, chromium=CHROMIUM, extension_dir=EXTENSION_DIR, template_dir=template
    )
    assert time.perf_counter() - started < 0.5  # no Chromium launched
    assert (template / "semantest-template.json").stat().st_mtime_ns == mtime
    assert unshared_left(template) == []


def unshared_left(profile: Path) -> list[str]:
    names = ("SingletonLock", "SingletonSocket", "Default/Cache", "Default/Code Cache")
    return [name for name in names if os.path.lexists(profile / name)]


async def test_copy_starts_with_user_scripts_and_no_extensions_page(
    playwright: Playwright, template: Path, profiles_root: Path
) -> None:
    started = time.perf_counter()
    profile = await open_profile(
        playwright,
        profile_dir=profiles_root / "agent-1",
        template_dir=template,
        chromium=CHROMIUM,
        owner="agent agent-1",
    )
    opened_s = time.perf_counter() - started
    with profile:
        assert profile.created
        copy_s, clicked, pages = await cold_start(playwright, profile.path)
        assert not clicked, "the copy needed the chrome://extensions toggle"
        assert not any(url.startswith("chrome://") for url in pages), pages
        again_s, clicked_again, _ = await cold_start(playwright, profile.path)
        assert not clicked_again

    fresh_s, fresh_clicked, _ = await cold_start(playwright, profiles_root / "fresh")
    assert fresh_clicked  # the slow path the template saves, still working as a fallback
    print(
        f"\n[profiles] open_profile with copy {opened_s * 1000:.0f} ms; cold start to "
        f"chrome.userScripts: template copy {copy_s:.2f} s, same profile again {again_s:.2f} s, "
        f"new empty profile (toggle clicked) {fresh_s:.2f} s"
    )


def test_concurrent_agents_prepare_the_template_once(profiles_root: Path) -> None:
    template_dir = profiles_root / "_shared_template"
    script = (
        "import asyncio, logging, sys\n"
        "from pathlib import Path\n"
        "from playwright.async_api import async_playwright\n"
        "from browser_profiles import ensure_template\n"
        "from extension_bridge import EXTENSION_DIR\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "async def main():\n"
        "    async with async_playwright() as pw:\n"
        "        await ensure_template(pw, chromium=sys.argv[1], extension_dir=EXTENSION_DIR,\n"
        "                              template_dir=Path(sys.argv[2]))\n"
        "asyncio.run(main())\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, CHROMIUM, str(template_dir)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert sum(log.count("prepared in") for log in logs) == 1, logs
    assert read_stamp(template_dir) is not None
    assert sorted(p.name for p in profiles_root.iterdir() if "_shared_template." in p.name) == [
        "_shared_template.lock"
    ]


# -- the login desk -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", str(port)], cwd=REPO, env=no_display()
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "sandbox did not start"
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def no_display(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    return env | extra


def read_desk_url(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if found := re.search(r"login desk: (http://127\.0\.0\.1:\d+/\?token=\S+)", line):
            return found.group(1)
    raise AssertionError(f"no desk URL printed; output: {seen}")


def test_login_desk_headless(template: Path, profiles_root: Path, sandbox_url: str) -> None:
    data_dir = profiles_root.parent / f"{profiles_root.name}-desk"
    env = no_display(
        SEMANTEST_DATA_DIR=str(data_dir),
        SEMANTEST_PROFILE_TEMPLATE=str(template),
        SEMANTEST_CHROMIUM=CHROMIUM,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "browser_profiles",
            "login-desk",
            "desk-1",
            "--url",
            f"{sandbox_url}/chat",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    profile = data_dir / "profiles" / "desk-1"
    try:
        desk = read_desk_url(proc)
        base, token = desk.split("/?token=")
        with httpx.Client(base_url=base, params={"token": token}, timeout=20) as c:
            page = c.get("/")
            assert page.status_code == 200 and "screenshot.png" in page.text
            assert (c.get("/state", params={"token": "wrong"})).status_code == 403

            shot = c.get("/screenshot.png")
            assert shot.headers["content-type"] == "image/png"
            assert Image.open(io.BytesIO(shot.content)).size == (1280, 900)

            # The desk holds the profile: an agent is refused, naming the desk's process.
            with pytest.raises(ProfileLocked, match=f"pid {proc.pid}"):
                ProfileLock(profile).acquire()

            def state() -> dict[str, Any]:
                got: dict[str, Any] = c.get("/state").json()
                return got

            assert state()["url"] == f"{sandbox_url}/chat"
            post(c, "/click", {"x": 640, "y": 400})  # the empty thread: composer loses focus
            assert state()["focused"] != "composer"
            post(c, "/click", {"x": 600, "y": 866})  # the composer at the bottom
            assert state()["focused"] == "composer"
            post(c, "/type", {"text": "a lighthouse at dusk"})
            fields = {f["id"]: f["value"] for f in state()["fields"]}
            assert fields["composer"] == "a lighthouse at dusk"
            post(c, "/key", {"key": "Enter"})  # the page's own Enter sends it
            deadline = time.monotonic() + 10
            while "Here is an image of a lighthouse at dusk" not in state()["text"]:
                assert time.monotonic() < deadline, state()
                time.sleep(0.1)
            assert (c.post("/click", json={"x": "left"})).status_code == 400

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with ProfileLock(profile) as lock:  # released on the way out
        assert lock.held
    assert not os.path.lexists(profile / "SingletonLock")  # Chromium closed cleanly
    assert json.loads((profile / "semantest-profile.json").read_text())["template"] == str(template)


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text


def test_template_dirs_are_cleaned(profiles_root: Path) -> None:
    leftovers = [p.name for p in profiles_root.iterdir() if ".new-" in p.name or ".old-" in p.name]
    assert leftovers == []
    shutil.rmtree(profiles_root / "fresh", ignore_errors=True)


def test_semantest_login_desk_runs_the_desk_and_passes_sigterm_on(
    template: Path, profiles_root: Path
) -> None:
    data_dir = profiles_root.parent / f"{profiles_root.name}-cli"
    env = no_display(
        SEMANTEST_DATA_DIR=str(data_dir),
        SEMANTEST_PROFILE_TEMPLATE=str(template),
        SEMANTEST_CHROMIUM=CHROMIUM,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "semantest.cli", "login-desk", "desk-2", "--headless"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base, token = read_desk_url(proc).split("/?token=")
        shot = httpx.get(f"{base}/screenshot.png", params={"token": token}, timeout=20)
        assert Image.open(io.BytesIO(shot.content)).format == "PNG"
        proc.send_signal(signal.SIGTERM)  # to the `semantest` process, not the desk itself
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with ProfileLock(data_dir / "profiles" / "desk-2") as lock:
        assert lock.held
