"""The login desk: open one profile in Chromium so a person can log it in to a provider.

    python -m browser_profiles login-desk PROFILE [--url URL] [--port N] [--headless]
    semantest login-desk PROFILE [--url URL]             (the same, through the main CLI)

PROFILE is an agent id (the folder `<data_dir>/profiles/PROFILE`, made from the template when
new) or a path to a profile folder. The profile is held under its lock for the whole session,
so an agent cannot start on it meanwhile (and the desk refuses a profile an agent holds).

With `DISPLAY` set Chromium opens headed: log in in its window. Without a display Chromium runs
headless and the desk serves a small page on 127.0.0.1 (a free port unless `--port`); it prints

    login desk: http://127.0.0.1:PORT/?token=TOKEN

Open that URL (through an SSH tunnel on a server): it shows a live screenshot stream of the tab
and forwards clicks, wheel, key presses, typed and pasted text to it through Playwright's
mouse and keyboard. The token in the URL keeps other local users off the logged-in browser.
HTTP endpoints (all take `?token=`): `GET /screenshot.png`, `GET /state` (url, title, focused
element, page text, form fields with passwords masked), `POST /click {x, y}`,
`POST /type {text}`, `POST /key {key}` (Playwright key names, e.g. `Enter`, `Control+a`),
`POST /scroll {dx, dy}`, `POST /goto {url}`.

Ctrl-C or SIGTERM closes Chromium cleanly (cookies and storage are written on close), releases
the lock and exits 0; the profile keeps the login.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from playwright.async_api import BrowserContext, Page, async_playwright
from playwright.async_api import Error as PlaywrightError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from browser_profiles.extension import (
    drop_stale_extension_code,
    enable_user_scripts,
    launch_args,
    service_worker,
)
from browser_profiles.profiles import open_profile
from extension_bridge import EXTENSION_DIR
from semantest.config import Settings

log = logging.getLogger(__name__)

VIEWPORT = {"width": 1280, "height": 900}

#: Page text and fields the desk reports; passwords only as their length.
STATE_JS = """() => ({
    url: location.href,
    title: document.title,
    focused: document.activeElement ? (document.activeElement.id || document.activeElement.tagName)
                                    : null,
    text: (document.body ? document.body.innerText : '').slice(0, 20000),
    fields: [...document.querySelectorAll(
            'input, textarea, [contenteditable=""], [contenteditable=true]')]
        .slice(0, 200).map(e => ({
            id: e.id || null,
            name: e.getAttribute('name'),
            type: e.getAttribute('type'),
            value: e.type === 'password' ? '•'.repeat(e.value.length)
                 : ('value' in e && e.tagName !== 'DIV' ? e.value : e.innerText),
        })),
})"""

DESK_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Semantest login desk</title>
<style>
 body { margin: 0; font: 14px system-ui, sans-serif; background: #222; color: #eee; }
 header { display: flex; gap: .5em; padding: .4em; align-items: center; }
 #url { flex: 1; font: inherit; }
 #screen { display: block; max-width: 100%; cursor: crosshair; outline: none; }
 #screen:focus { box-shadow: 0 0 0 2px #4af; }
 small { color: #aaa; }
</style></head>
<body>
<header>
 <input id="url" placeholder="URL, Enter to open">
 <small id="status">connecting…</small>
</header>
<img id="screen" tabindex="0" alt="the browser tab">
<script>
const token = new URLSearchParams(location.search).get("token");
const q = path => path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
const screen = document.getElementById("screen");
const status = document.getElementById("status");
let chain = Promise.resolve();
function send(path, body) {  // one input at a time, in order
  chain = chain.then(() => fetch(q(path), {method: "POST",
    headers: {"content-type": "application/json"}, body: JSON.stringify(body)}))
    .catch(e => { status.textContent = String(e); });
  return chain;
}
async function refresh() {
  try {
    const r = await fetch(q("screenshot.png?t=" + Date.now()));
    if (r.ok) {
      const old = screen.src;
      screen.src = URL.createObjectURL(await r.blob());
      if (old) URL.revokeObjectURL(old);
      status.textContent = "live";
    } else status.textContent = "screenshot: " + r.status;
  } catch (e) { status.textContent = "desk gone"; setTimeout(refresh, 2000); return; }
  setTimeout(refresh, 200);
}
function point(e) {
  const box = screen.getBoundingClientRect();
  return {x: (e.clientX - box.left) * screen.naturalWidth / box.width,
          y: (e.clientY - box.top) * screen.naturalHeight / box.height};
}
screen.addEventListener("click", e => { screen.focus(); send("click", point(e)); });
screen.addEventListener("wheel", e => {
  e.preventDefault();
  send("scroll", {dx: e.deltaX, dy: e.deltaY});
}, {passive: false});
screen.addEventListener("keydown", e => {
  e.preventDefault();
  const mods = (e.ctrlKey ? "Control+" : "") + (e.altKey ? "Alt+" : "")
    + (e.metaKey ? "Meta+" : "");
  if (e.key.length === 1 && !mods) send("type", {text: e.key});
  else if (!["Control", "Alt", "Meta", "Shift"].includes(e.key))
    send("key", {key: mods + (e.shiftKey && e.key.length > 1 ? "Shift+" : "") + e.key});
});
document.addEventListener("paste", e => {
  if (document.activeElement !== screen) return;
  e.preventDefault();
  send("type", {text: e.clipboardData.getData("text")});
});
document.getElementById("url").addEventListener("keydown", e => {
  if (e.key === "Enter") send("goto", {url: e.target.value});
});
refresh();
</script></body></html>
"""


class Desk:
    """The tab the desk shows: the newest open page of the context (logins open popups)."""

    def __init__(self, context: BrowserContext, page: Page, token: str) -> None:
        self.context = context
        self.pages = [page]
        self.token = token
        context.on("page", self._opened)

    @property
    def page(self) -> Page:
        """The page inputs go to."""
        self.pages = [p for p in self.pages if not p.is_closed()] or self.pages[:1]
        return self.pages[-1]

    def _opened(self, page: Page) -> None:
        self.pages.append(page)


Handler = Callable[[Request], Awaitable[Response]]


def build_app(desk: Desk) -> Starlette:
    """The desk's HTTP app (every route checks the token)."""

    def guarded(handler: Handler) -> Handler:
        async def guard(request: Request) -> Response:
            given = request.query_params.get("token", "")
            if not secrets.compare_digest(given.encode(), desk.token.encode()):
                return JSONResponse({"error": "bad or missing token"}, status_code=403)
            try:
                return await handler(request)
            except PlaywrightError as exc:
                return JSONResponse({"error": str(exc).splitlines()[0]}, status_code=503)

        return guard

    async def index(_request: Request) -> Response:
        return HTMLResponse(DESK_HTML, headers={"Cache-Control": "no-store"})

    async def screenshot(_request: Request) -> Response:
        png = await desk.page.screenshot(type="png", caret="initial")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def state(_request: Request) -> Response:
        info: dict[str, Any] = await desk.page.evaluate(STATE_JS)
        info["pages"] = [p.url for p in desk.pages if not p.is_closed()]
        return JSONResponse(info)

    async def body(request: Request) -> dict[str, Any]:
        data = json.loads(await request.body() or b"{}")
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        return data

    async def click(request: Request) -> Response:
        data = await body(request)
        button = data.get("button", "left")
        await desk.page.mouse.click(float(data["x"]), float(data["y"]), button=button)
        return JSONResponse({"ok": True})

    async def type_text(request: Request) -> Response:
        await desk.page.keyboard.type(str((await body(request))["text"]))
        return JSONResponse({"ok": True})

    async def key(request: Request) -> Response:
        await desk.page.keyboard.press(str((await body(request))["key"]))
        return JSONResponse({"ok": True})

    async def scroll(request: Request) -> Response:
        data = await body(request)
        await desk.page.mouse.wheel(float(data.get("dx", 0)), float(data.get("dy", 0)))
        return JSONResponse({"ok": True})

    async def goto(request: Request) -> Response:
        url = str((await body(request))["url"]).strip()
        if "://" not in url:
            url = "https://" + url
        await desk.page.goto(url)
        return JSONResponse({"ok": True, "url": desk.page.url})

    def with_bad_input(handler: Handler) -> Handler:
        async def checked(request: Request) -> Response:
            try:
                return await handler(request)
            except (KeyError, ValueError, TypeError) as exc:
                return JSONResponse({"error": f"bad input: {exc!r}"}, status_code=400)

        return checked

    routes = [
        Route("/", guarded(index)),
        Route("/screenshot.png", guarded(screenshot)),
        Route("/state", guarded(state)),
        *(
            Route(path, guarded(with_bad_input(handler)), methods=["POST"])
            for path, handler in [
                ("/click", click),
                ("/type", type_text),
                ("/key", key),
                ("/scroll", scroll),
                ("/goto", goto),
            ]
        ),
    ]
    return Starlette(routes=routes)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the desk handles SIGINT/SIGTERM itself (uvicorn
    re-raises captured signals after serving, which would kill us before Chromium is closed)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def resolve_profile(profile: str, settings: Settings) -> Path:
    """An agent id names `<profiles_dir>/<id>`; anything with a path separator is a path."""
    if os.sep in profile or profile.startswith("."):
        return Path(profile).resolve()
    return settings.profiles_dir.resolve() / profile


async def run_login_desk(
    profile_dir: Path,
    *,
    settings: Settings,
    url: str | None = None,
    headed: bool | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    extension_dir: Path = EXTENSION_DIR,
    announce: Callable[[str], None] = print,
) -> int:
    """Run the desk until SIGINT/SIGTERM (or the browser closes); returns the exit code."""
    if not settings.chromium:
        announce("no Chromium found: set SEMANTEST_CHROMIUM")
        return 2
    if headed is None:
        headed = bool(os.environ.get("DISPLAY"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with async_playwright() as playwright:
        opened = await open_profile(
            playwright,
            profile_dir=profile_dir,
            template_dir=settings.template_dir.resolve(),
            chromium=settings.chromium,
            extension_dir=extension_dir,
            owner="login desk",
        )
        with opened:
            await asyncio.to_thread(drop_stale_extension_code, profile_dir, extension_dir)
            context = await playwright.chromium.launch_persistent_context(
                str(profile_dir),
                executable_path=settings.chromium,
                headless=not headed,
                args=launch_args(extension_dir),
                **({"no_viewport": True} if headed else {"viewport": VIEWPORT}),
            )
            crashed = False

            def closed(_context: BrowserContext) -> None:
                nonlocal crashed
                crashed = not stop.is_set()
                stop.set()

            context.on("close", closed)
            try:
                await enable_user_scripts(context, await service_worker(context))
                page = context.pages[0] if context.pages else await context.new_page()
                if url:
                    await page.goto(url)
                announce(f"profile {profile_dir} (locked while the desk runs)")
                if headed:
                    announce("log in in the Chromium window; Ctrl-C here (or close it) when done")
                    await stop.wait()
                else:
                    desk = Desk(context, page, secrets.token_urlsafe(16))
                    await _serve(desk, host, port, stop, announce)
            finally:
                if not crashed:
                    with contextlib.suppress(PlaywrightError):
                        await context.close()
    announce("browser closed, profile released")
    return 1 if crashed else 0


async def _serve(
    desk: Desk, host: str, port: int, stop: asyncio.Event, announce: Callable[[str], None]
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(build_app(desk), log_level="warning", access_log=False, lifespan="off")
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.01)
    if serving.done():
        await serving  # raises why it did not start
    bound = sock.getsockname()[1]
    announce(f"login desk: http://{host}:{bound}/?token={desk.token}")
    announce("open it in a browser (ssh -L for a remote machine); Ctrl-C when logged in")
    await stop.wait()
    server.should_exit = True
    await serving
    sock.close()


def main_login_desk(profile: str, url: str | None, port: int, headless: bool) -> int:
    """Entry of `python -m browser_profiles login-desk`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()

    def announce(line: str) -> None:
        print(line, flush=True)

    return asyncio.run(
        run_login_desk(
            resolve_profile(profile, settings),
            settings=settings,
            url=url,
            headed=False if headless else None,
            port=port,
            announce=announce,
        )
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run it as: python -m browser_profiles login-desk PROFILE")
