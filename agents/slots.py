"""A tab slot: one provider page in the agent's browser, the addon tab behind it, and its state.

A slot (re)opens by navigating its own page to the provider's start URL with a marker in the
fragment (`#semantest-slot=<name>.<nonce>`) and waiting for the addon whose `addon.ready` carries
exactly that URL. So a slot only ever adopts the tab it opened — never another slot's tab, never
a stray page — and it reads the addon's `detectState()` from that message: a page that is not
`ready` (logged out, rate-limited) parks the slot with that reason instead of taking jobs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

from playwright.async_api import BrowserContext, CDPSession, Page

from extension_bridge.server import BridgeServer
from semantest.errors import RetryableFailure
from semantest.fleet import SlotInfo, SlotState

log = logging.getLogger(__name__)

#: Page states that make a slot unable to take jobs, and how long it stays parked before it
#: looks again (seconds): someone must sign in; a provider's rate limit lasts a while.
PARK_FOR_S = {"logged-out": 60.0, "rate-limited": 30.0, "busy": 5.0}
#: Addon error codes that say the page (not the job) is unusable, and the state they mean.
PARKING_CODES = {"LOGGED_OUT": "logged-out", "RATE_LIMITED": "rate-limited"}
#: Under sustained load (never idle), a slot's page is reloaded after this many jobs: it frees
#: the raster tiles that grow with the conversation (~12 MB per slot after 7 sandbox jobs); the
#: next job waits for the reload, so it is rare. An idle slot tidies itself (`tidy`).
RELOAD_EVERY_JOBS = 25


class SlotParked(RetryableFailure):
    """The slot's page cannot take jobs now (logged out, rate-limited); retry elsewhere."""


@dataclass
class Slot:
    """One provider page that runs one job at a time."""

    index: int
    name: str
    provider: str
    account: str
    start_url: str
    page: Page | None = None
    tab_id: int | None = None
    marker: str = ""
    state: SlotState = SlotState.STARTING
    job_id: str | None = None
    parked_reason: str | None = None
    parked_until: float = 0.0
    jobs_done: int = 0
    #: Set to stop the running attempt: `abort_kind` is `drain` (give the job back uncharged),
    #: `stale` (another attempt owns it now) or `crash` (a retryable failure); `abort_reason`
    #: is the message.
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    abort_kind: str = ""
    abort_reason: str = ""
    cdp: CDPSession | None = None
    cdp_page: Page | None = None
    #: Jobs ran since the page was last tidied.
    untidy: bool = False

    def stop_attempt(self, kind: str, reason: str) -> None:
        """Abort the running attempt (no-op when idle)."""
        if self.job_id is not None and not self.abort.is_set():
            self.abort_kind, self.abort_reason = kind, reason
            self.abort.set()

    @property
    def parked(self) -> bool:
        """Parked and not yet due for another look."""
        return self.parked_reason is not None and time.monotonic() < self.parked_until

    def info(self) -> SlotInfo:
        """What the heartbeat says about this slot."""
        return SlotInfo(
            index=self.index,
            name=self.name,
            provider=self.provider,
            account=self.account,
            state=SlotState.PARKED if self.parked_reason else self.state,
            job_id=self.job_id,
            parked_reason=self.parked_reason,
            jobs_done=self.jobs_done,
        )

    def park(self, reason: str) -> None:
        """Stop taking jobs for `PARK_FOR_S[reason]` (then the next open looks at the page)."""
        if self.parked_reason != reason:
            log.warning("slot %s parked: %s", self.name, reason)
        self.parked_reason, self.parked_until = reason, time.monotonic() + PARK_FOR_S[reason]
        self.forget_tab()

    async def ready_tab(self, context: BrowserContext, bridge: BridgeServer, timeout: float) -> int:
        """The tab id of this slot's addon, opening or reloading the page when needed.

        Raises `SlotParked` when the page says it cannot take jobs, and `RetryableFailure`
        when the addon does not announce itself within `timeout`.
        """
        ready = bridge.state.tabs.get(self.tab_id) if self.tab_id is not None else None
        if ready is not None and ready.url.endswith(self.marker):
            return ready.tab_id
        if self.page is None or self.page.is_closed():
            self.page = await context.new_page()
            self.page.on("crash", lambda _page: self._crashed())
        if self.tab_id is not None:
            bridge.state.tabs.pop(self.tab_id, None)
        self.tab_id = None
        self.marker = f"#semantest-slot={self.name}.{secrets.token_hex(4)}"
        if self.page.url.split("#", 1)[0] == self.start_url:
            # Only the fragment would change: a same-document navigation that does not reload
            # the page (nor re-inject the addon). Set the new marker, then reload.
            await self.page.evaluate("marker => { location.hash = marker; }", self.marker)
            await self.page.reload(wait_until="domcontentloaded")
        else:
            await self.page.goto(self.start_url + self.marker, wait_until="domcontentloaded")
        marker = self.marker
        try:
            tab = await bridge.wait_for_tab(lambda r: r.url.endswith(marker), timeout)
        except TimeoutError:
            raise RetryableFailure(
                f"the {self.provider} addon did not start in slot {self.name} "
                f"within {timeout:.0f} s",
                "SLOT_UNAVAILABLE",
            ) from None
        state = bridge.state.tabs[tab].state
        if state in PARK_FOR_S:
            self.park(state)
            raise SlotParked(f"slot {self.name}: the provider page is {state}", "SLOT_PARKED")
        self.tab_id = tab
        self.parked_reason = None
        log.info("slot %s ready on tab %s (%s)", self.name, tab, self.start_url)
        return tab

    async def tidy(self, context: BrowserContext, bridge: BridgeServer, timeout: float) -> None:
        """Let the page drop what it holds for finished jobs.

        A reload frees the raster tiles a growing conversation needs; a critical memory-pressure
        signal (CDP) frees the decoded images of earlier replies, which a reload keeps. Measured
        on the sandbox: ~33 MB per extra slot after 7 jobs without either, ~18 MB with both.
        Both cost CPU in the renderer (the purge is a GC), so they run when the slot is idle —
        except the reload every `RELOAD_EVERY_JOBS` jobs, which bounds the growth under load.
        """
        self.untidy = False
        self.forget_tab()
        await self.ready_tab(context, bridge, timeout)
        if self.page is None or self.page.is_closed():
            return
        if self.cdp is None or self.cdp_page is not self.page:
            self.cdp, self.cdp_page = await context.new_cdp_session(self.page), self.page
        await self.cdp.send("Memory.simulatePressureNotification", {"level": "critical"})

    def forget_tab(self) -> None:
        """The addon is gone, broken or was canceled mid-job: reload before the next job."""
        self.tab_id = None
        self.marker = ""

    def _crashed(self) -> None:
        log.error("slot %s: the page crashed; it reopens before the next job", self.name)
        self.forget_tab()
        self.page = None
        self.stop_attempt("crash", "the provider page crashed")
