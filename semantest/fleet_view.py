"""`semantest fleet`: the controller's `GET /api/v1/fleet` as a live terminal table.

Reads the JSON leniently (missing fields show as `—`), so a CLI of one version can watch a
controller of another.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

DEFAULT_URL = "http://127.0.0.1:8000"

_SLOT_STYLES = {
    "idle": "green",
    "busy": "yellow",
    "parked": "red",
    "draining": "magenta",
    "starting": "cyan",
}


class FleetViewError(RuntimeError):
    """The fleet could not be read; the message is meant for the user."""


class KeyRefused(FleetViewError):
    """The controller answered 401/403: retrying will not help."""


def connection_from_env() -> tuple[str, str | None]:
    """Controller URL (`SEMANTEST_URL`) and API key (`SEMANTEST_API_KEY`, else the admin key)."""
    url = os.environ.get("SEMANTEST_URL") or DEFAULT_URL
    key = os.environ.get("SEMANTEST_API_KEY") or os.environ.get("SEMANTEST_ADMIN_KEY") or None
    return url.rstrip("/"), key


def fetch_fleet(client: httpx.Client) -> dict[str, Any]:
    """`GET /api/v1/fleet`, or FleetViewError saying what went wrong."""
    try:
        reply = client.get("/api/v1/fleet")
    except httpx.HTTPError as exc:
        raise FleetViewError(
            f"cannot reach the controller at {client.base_url} ({type(exc).__name__}); "
            "is it running? (set SEMANTEST_URL)"
        ) from None
    if reply.status_code in (401, 403):
        raise KeyRefused(
            f"the controller refused the API key ({reply.status_code}): "
            "set SEMANTEST_API_KEY (or SEMANTEST_ADMIN_KEY)"
        )
    if reply.status_code != 200:
        raise FleetViewError(f"GET /api/v1/fleet answered {reply.status_code}: {reply.text[:200]}")
    try:
        body: dict[str, Any] = reply.json()
    except ValueError:
        raise FleetViewError("GET /api/v1/fleet did not answer JSON") from None
    return body


def _text(value: Any) -> str:
    return "—" if value is None or value == "" else str(value)


def _mb(value: Any) -> str:
    return f"{value / 1_048_576:.0f} MB" if isinstance(value, int | float) and value else "—"


def _seconds(value: Any) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "—"


def _addons(agent: dict[str, Any]) -> str:
    parts = [f"{a.get('id')}@{a.get('version')}" for a in agent.get("addons") or []]
    ext = agent.get("extensionVersion")
    return " ".join(([f"ext {ext}"] if ext else []) + parts) or "—"


def render_fleet(fleet: dict[str, Any], url: str, error: str | None = None) -> RenderableType:
    """Two tables: the agents (one row each), then every slot (`<agent>/<index>`)."""
    totals = fleet.get("totals") or {}
    agents: list[dict[str, Any]] = fleet.get("agents") or []
    at = fleet.get("at")
    now = at if isinstance(at, int | float) else time.time()
    title = (
        f"Semantest fleet at {url}: {totals.get('agents', 0)} agent(s), "
        f"{totals.get('slots', 0)} slot(s): busy {totals.get('busy', 0)}, "
        f"idle {totals.get('idle', 0)}, parked {totals.get('parked', 0)}, "
        f"draining {totals.get('draining', 0)}"
    )
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("agent", no_wrap=True)
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("host")
    table.add_column("state")
    table.add_column("beat", justify="right")
    table.add_column("jobs", justify="right")
    table.add_column("RSS", justify="right")
    table.add_column("ready", justify="right")
    table.add_column("addons", overflow="fold")
    slots = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    slots.add_column("slot", no_wrap=True)
    slots.add_column("provider")
    slots.add_column("account")
    slots.add_column("state")
    slots.add_column("job / parked reason", overflow="fold")
    slots.add_column("jobs", justify="right")
    for agent in agents:
        beat = agent.get("beatAt")
        table.add_row(
            _text(agent.get("id")),
            _text(agent.get("pid")),
            _text(agent.get("host")),
            _text(agent.get("state")),
            f"{max(0.0, now - beat):.0f} s ago" if isinstance(beat, int | float) else "—",
            _text(agent.get("jobsDone")),
            _mb(agent.get("rssBytes")),
            _seconds(agent.get("readyAfterS")),
            _addons(agent),
        )
        for i, slot in enumerate(agent.get("slots") or []):
            state = _text(slot.get("state"))
            slots.add_row(
                _text(slot.get("name") or f"{agent.get('id')}/{slot.get('index', i)}"),
                _text(slot.get("provider")),
                _text(slot.get("account")),
                Text(state, style=_SLOT_STYLES.get(state, "")),
                _text(slot.get("jobId") or slot.get("parkedReason")),
                _text(slot.get("jobsDone")),
            )
    parts: list[RenderableType] = [table]
    if not agents:
        table.caption = "no live agents"
    elif slots.row_count:
        parts.append(slots)
    if error:
        parts.append(Text(f"{error} (retrying)", style="red"))
    return Group(*parts)


def show_fleet(
    url: str, key: str | None, *, once: bool, console: Console, interval: float = 1.0
) -> None:
    """Print the fleet once, or keep a live table refreshed every `interval` seconds until
    interrupted. Raises FleetViewError when the first read fails or the key is refused."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=5.0) as client:
        fleet = fetch_fleet(client)
        if once:
            console.print(render_fleet(fleet, url))
            return
        with Live(render_fleet(fleet, url), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                try:
                    fleet = fetch_fleet(client)
                    live.update(render_fleet(fleet, url), refresh=True)
                except KeyRefused:
                    raise
                except FleetViewError as exc:
                    live.update(render_fleet(fleet, url, error=str(exc)), refresh=True)
