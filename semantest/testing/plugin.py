"""pytest plugin `semantest.testing`: end-to-end tests of an MV3 extension and its addons in
real Chromium, on top of pytest-playwright.

Registered through the `pytest11` entry point: `pip install semantest` is enough.
Layering, as in pytest-playwright: the browser, its extension, the addon server and the bridge
live for the session; pages live for one test. Every fixture can be overridden in a
`conftest.py`.
Launch options come from pytest-playwright (`browser_type`, `browser_type_launch_args`, hence
`--headed`, `--browser-channel`, `--slowmo`) and a failed test's screenshot, DOM and console log
go to pytest-playwright's `output_path` (`--output`, default `test-results/`).

Importing this module costs nothing: Playwright and the servers load inside the fixtures.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, BrowserType, Page, Worker

    from extension_bridge.protocol import AddonReady
    from semantest.testing.artifacts import PageRecorder
    from semantest.testing.servers import AddonServer, Bridge

#: How long `addon_page` waits for the addons to report ready, by default.
READY_TIMEOUT_S = 15.0
#: What the extension's service worker is told (see extension/service_worker.js).
CONFIGURE_JS = """async cfg => {
    if (typeof self.semantest?.configure !== 'function')
        throw new Error('this extension has no self.semantest.configure()');
    return await self.semantest.configure(cfg);
}"""
STATUS_JS = "() => self.semantest?.status?.() ?? null"

AddonPage = Callable[..., "Page"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("semantest", "Semantest extension testing (semantest.testing)")
    group.addoption(
        "--extension-dir",
        default=None,
        metavar="DIR",
        help="Unpacked MV3 extension to load (default: the Semantest extension).",
    )
    group.addoption(
        "--addons-dir",
        default=None,
        metavar="DIR",
        help="Folder of addons (<id>/addon.json) the addon server serves "
        "(default: the addons shipped with semantest).",
    )
    group.addoption(
        "--chromium",
        default=None,
        metavar="PATH",
        help="Chromium executable for the extension's browser (default: $SEMANTEST_CHROMIUM, "
        "else /usr/bin/chromium or the first chromium on PATH). --headed is pytest-playwright's.",
    )


def _fixtures(item: pytest.Item) -> list[str]:
    return list(getattr(item, "fixturenames", ()))


def _uses_sync_playwright(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    defs = info.name2fixturedefs.get("playwright")
    return bool(defs) and defs[-1].func.__module__ == "pytest_playwright.pytest_playwright"


#: The plugin's fixtures that stand on pytest-playwright's.
NEEDS_PYTEST_PLAYWRIGHT = {
    "extension_launch_args",
    "extension_context",
    "extension_pages",
    "extension_page",
    "addon_page",
}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run browser tests without pytest-playwright, saying so; with pytest-asyncio
    active, run the tests on pytest-playwright's (sync) Playwright last.

    Once started, sync Playwright marks asyncio's loop as running in the main thread for the
    rest of the session, and every asyncio test after it fails ("Cannot run the event loop
    while another loop is running"). Moving those tests behind the others (order otherwise
    kept) lets one session hold both.
    """
    if not config.pluginmanager.has_plugin("playwright"):
        wanted = [i.nodeid for i in items if NEEDS_PYTEST_PLAYWRIGHT & set(_fixtures(i))]
        if wanted:
            raise pytest.UsageError(
                "semantest.testing's browser fixtures stand on pytest-playwright, which is not "
                f"installed or is disabled (-p no:playwright); {wanted[0]} needs them. "
                "Enable it, or install it: pip install pytest-playwright"
            )
    if not config.pluginmanager.has_plugin("asyncio"):
        return
    late = [item for item in items if _uses_sync_playwright(item)]
    if late and len(late) < len(items):
        moved = set(map(id, late))
        items[:] = [item for item in items if id(item) not in moved] + late


# -- where things are ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium_executable(pytestconfig: pytest.Config) -> str | None:
    """The Chromium to launch: --chromium, $SEMANTEST_CHROMIUM, else one found on the system.

    None when a --browser-channel is given (Playwright finds that browser) or none is found
    (then Playwright tries its own download).
    """
    from semantest.config import find_chromium

    given = pytestconfig.getoption("--chromium") or os.environ.get("SEMANTEST_CHROMIUM")
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise pytest.UsageError(f"--chromium {given}: no such file")
        return str(path)
    if pytestconfig.getoption("--browser-channel", None):
        return None
    return find_chromium()


@pytest.fixture(scope="session")
def extension_dir(pytestconfig: pytest.Config) -> Path:
    """The unpacked extension to load: --extension-dir, else the Semantest extension."""
    given = pytestconfig.getoption("--extension-dir")
    if not given:
        from extension_bridge import EXTENSION_DIR

        return EXTENSION_DIR
    path = Path(given).expanduser().resolve()
    if not (path / "manifest.json").is_file():
        raise pytest.UsageError(f"--extension-dir {given}: no manifest.json in {path}")
    return path


@pytest.fixture(scope="session")
def addons_dir(pytestconfig: pytest.Config) -> Path:
    """The addons the addon server serves: --addons-dir, else semantest's own."""
    given = pytestconfig.getoption("--addons-dir")
    if not given:
        from addons import ADDONS_DIR

        return ADDONS_DIR
    path = Path(given).expanduser().resolve()
    if not path.is_dir():
        raise pytest.UsageError(f"--addons-dir {given}: no such folder")
    return path


# -- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def extension_launch_args(
    browser_type_launch_args: dict[str, Any],
    chromium_executable: str | None,
    extension_dir: Path,
) -> dict[str, Any]:
    """Keyword arguments of `launch_persistent_context`: pytest-playwright's launch options
    plus the Chromium executable and the flags that load `extension_dir`."""
    from semantest.testing.browser import persistent_launch_options

    return persistent_launch_options(
        browser_type_launch_args, chromium=chromium_executable, extension_dir=extension_dir
    )


@pytest.fixture(scope="session")
def extension_profile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The browser profile of the session (a fresh one)."""
    return tmp_path_factory.mktemp("extension-profile")


@pytest.fixture(scope="session")
def extension_context(
    browser_type: BrowserType,
    extension_launch_args: dict[str, Any],
    extension_profile_dir: Path,
    extension_dir: Path,
) -> Iterator[BrowserContext]:
    """A persistent Chromium context with the extension loaded and "Allow User Scripts" on."""
    from semantest.testing.browser import (
        allow_user_scripts,
        extension_worker,
        launch_extension_context,
    )

    if browser_type.name != "chromium":
        pytest.skip(f"extensions load only in Chromium, not {browser_type.name}")
    context = launch_extension_context(
        browser_type,
        profile_dir=extension_profile_dir,
        extension_dir=extension_dir,
        options=extension_launch_args,
    )
    try:
        allow_user_scripts(context, extension_worker(context, None, 30))
        yield context
    finally:
        context.close()


@pytest.fixture(scope="session")
def extension_id(extension_context: BrowserContext) -> str:
    """The loaded extension's id (from its service worker's URL)."""
    from semantest.testing.browser import extension_worker

    return extension_worker(extension_context, None, 30).url.split("/")[2]


@pytest.fixture
def service_worker(extension_context: BrowserContext, extension_id: str) -> Worker:
    """The extension's service worker as it is now: started again if Chromium stopped it.

    Function-scoped, so each test gets the live one; within a test,
    `semantest.testing.service_worker_of(extension_context, extension_id)` does the same.
    """
    from semantest.testing.browser import extension_worker

    return extension_worker(extension_context, extension_id, 30)


# -- addons and the bridge -------------------------------------------------------------------


@pytest.fixture(scope="session")
def addon_server_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis of the addon server: a private `redis-server` (override to use your own)."""
    from semantest.testing.servers import redis_server

    with redis_server(tmp_path_factory.mktemp("addon-redis")) as url:
        yield url


@pytest.fixture(scope="session")
def addon_server(
    addons_dir: Path, addon_server_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AddonServer]:
    """A controller serving `addons_dir` on a free port (`.url`, `.addons`: id → matches)."""
    from semantest.testing.servers import serve_addons

    with serve_addons(
        addons_dir, addon_server_redis_url, tmp_path_factory.mktemp("addon-server")
    ) as server:
        yield server


@pytest.fixture(scope="session")
def bridge(
    extension_context: BrowserContext, extension_id: str, addon_server: AddonServer
) -> Iterator[Bridge]:
    """The agent's side: the extension is told to take its addons from `addon_server` and to
    connect here. `bridge.run(page, prompt)` sends a job to the addon in `page` and returns
    its `JobResult` (`.images`, `.reply`), raising `AddonJobError` on `job.error`."""
    from playwright.sync_api import Error

    from semantest.testing.browser import extension_worker
    from semantest.testing.servers import Bridge

    hosted = Bridge()
    try:
        worker = extension_worker(extension_context, extension_id, 30)
        try:
            worker.evaluate(
                CONFIGURE_JS, {"controllerUrl": addon_server.url, "bridgeUrl": hosted.url}
            )
        except Error as exc:
            raise RuntimeError(
                f"the extension did not take its configuration: {exc.message.splitlines()[0]}"
            ) from None
        yield hosted
    finally:
        hosted.close()


# -- pages -----------------------------------------------------------------------------------


@pytest.fixture
def extension_pages(
    request: pytest.FixtureRequest, pytestconfig: pytest.Config, output_path: str
) -> Iterator[PageRecorder]:
    """The pages a test opens in the extension's browser: recorded, and closed after it.

    When the test failed (or with `--screenshot on`) each page's screenshot, DOM and console
    log are written to the test's `output_path` and listed in the report's user properties.
    """
    from semantest.testing.artifacts import PageRecorder

    recorder = PageRecorder()
    yield recorder
    try:
        failed = _failed(request.node)
        keep = pytestconfig.getoption("--screenshot", "off") == "on"
        if recorder.pages and (failed or keep):
            written = recorder.save(
                Path(output_path),
                "failed" if failed else "finished",
                full_page=bool(pytestconfig.getoption("--full-page-screenshot", False)),
            )
            for kind, path in written:
                request.node.user_properties.append((f"semantest_{kind}", str(path)))
    finally:
        recorder.close()


def _failed(item: Any) -> bool:
    call = getattr(item, "rep_call", None)  # set by pytest-playwright's report hook
    if call is not None:
        return bool(call.failed)
    setup = getattr(item, "rep_setup", None)
    return setup is None or bool(setup.failed)


@pytest.fixture
def extension_page(extension_context: BrowserContext, extension_pages: PageRecorder) -> Page:
    """A new page in the extension's browser (no addon waited for)."""
    page = extension_context.new_page()
    extension_pages.watch(page)
    return page


@pytest.fixture
def addon_page(
    extension_context: BrowserContext,
    extension_id: str,
    bridge: Bridge,
    addon_server: AddonServer,
    extension_pages: PageRecorder,
) -> AddonPage:
    """`addon_page(url, addons=[...], timeout=15)`: a new page at `url` once each addon in
    `addons` has been injected and has reported ready (`addon.ready`) from it."""

    def open_page(
        url: str, addons: Sequence[str] = (), *, timeout: float = READY_TIMEOUT_S
    ) -> Page:
        if isinstance(addons, str):
            addons = [addons]
        unknown = [a for a in addons if a not in addon_server.addons]
        if unknown:
            raise LookupError(
                f"addon_page: no addon {', '.join(map(repr, unknown))} in "
                f"{addon_server.addons_dir} (it has: {', '.join(sorted(addon_server.addons))})"
            )
        if "#" in url:
            raise ValueError(f"addon_page: url must not carry a #fragment (got {url!r})")
        marker = f"#semantest-test={secrets.token_hex(6)}"
        page = extension_context.new_page()
        extension_pages.watch(page)
        page.goto(url + marker, wait_until="domcontentloaded")
        for addon in addons:
            try:
                bridge.wait_ready(_ready_in(addon, marker), timeout)
            except TimeoutError:
                raise AssertionError(
                    _not_ready(
                        addon,
                        url,
                        timeout,
                        addon_server,
                        extension_context,
                        extension_id,
                        extension_pages.console_of(page),
                    )
                ) from None
        return page

    return open_page


def _ready_in(addon: str, marker: str) -> Callable[[AddonReady], bool]:
    return lambda ready: ready.addon_id == addon and ready.url.endswith(marker)


def _not_ready(
    addon: str,
    url: str,
    timeout: float,
    server: AddonServer,
    context: BrowserContext,
    extension_id: str,
    console: list[str],
) -> str:
    from semantest.testing.browser import extension_worker
    from semantest.testing.servers import addon_covers

    matches = server.addons[addon]
    lines = [f"addon {addon!r} did not report ready in {url} within {timeout:g} s."]
    if not addon_covers(matches, url):
        lines.append(f"Its matches {matches} do not cover this URL.")
    try:
        status = extension_worker(context, extension_id, 5).evaluate(STATUS_JS) or {}
        registered = [a["id"] for a in status.get("addons", [])]
        lines.append(
            f"The extension registered {registered or 'no addons'} "
            f"(user scripts {'on' if status.get('userScripts') else 'OFF'})."
        )
    except Exception as exc:  # the diagnosis must not hide the failure
        lines.append(f"(extension status unavailable: {exc})")
    errors = [line for line in console if line.startswith(("[error]", "[pageerror]"))]
    lines.append(
        "The page's console errors:\n  " + "\n  ".join(errors)
        if errors
        else "The page's console shows no error: does the addon call SemantestAddon.define()?"
    )
    return "\n".join(lines)
