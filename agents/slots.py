"""A tab slot: one provider page in the agent's browser, the addon tab behind it, and its state.

A slot (re)opens by navigating its own page to the provider's start URL with a marker in the
fragment (`#semantest-slot=<name>.<nonce>`) and waiting for the addon whose `addon.ready` carries
exactly that URL. So a slot only ever adopts the tab it opened — never another slot's tab, never
a stray page — and it reads the addon's `detectState()` from that message: a page that is not
`ready` (logged out, rate-limited) parks the slot with that reason instead of taking jobs.

Besides its page for one-off jobs, a slot keeps one tab per open chat session (`ChatTab`,
at most `MAX_CHATS_PER_SLOT`): a conversation lives in its own tab, so tidying or reloading the
slot's page never touches it, and the slot keeps taking other jobs while chats are open.
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
PARKING_CODES = {"PROVIDER_LOGGED_OUT": "logged-out", "PROVIDER_RATE_LIMITED": "rate-limited"}
#: Under sustained load (never idle), a slot's page is reloaded after this many jobs: it frees
#: the raster tiles that grow with the conversation (~12 MB per slot after 7 sandbox jobs); the
#: next job waits for the reload, so it is rare. An idle slot tidies itself (`tidy`).
RELOAD_EVERY_JOBS = 25
#: Chat tabs one slot keeps open; opening one more closes the least recently used (its chat
#: ends early). A sandbox chat tab costs ~15 MB; idle chats close after `chat_idle_s`.
MAX_CHATS_PER_SLOT = 4


class SlotParked(RetryableFailure):
    """The slot's page cannot take jobs now (logged out, rate-limited); retry elsewhere."""


@dataclass
class ChatTab:
    """The tab holding one chat session's conversation."""

    chat_id: str
    page: Page
    tab_id: int
    marker: str
    #: `time.monotonic()` of its last message, for least-recently-used eviction.
    last_used: float = field(default_factory=time.monotonic)
    #: A message of this chat is running in the tab.
    busy: bool = False
    crashed: bool = False

    @property
    def gone(self) -> bool:
        """The tab (and its conversation) is lost."""
        return self.crashed or self.page.is_closed()


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
    #: Open chat sessions' tabs, by chat id.
    chats: dict[str, ChatTab] = field(default_factory=dict)

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

    def park(self, reason: str, for_s: float | None = None) -> None:
        """Stop taking jobs for `for_s` (a rate-limit notice's wait) or `PARK_FOR_S[reason]`
        (then the next open looks at the page)."""
        if self.parked_reason != reason:
            log.warning("slot %s parked: %s", self.name, reason)
        wait = PARK_FOR_S[reason] if for_s is None else for_s
        self.parked_reason, self.parked_until = reason, time.monotonic() + wait
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
        tab = await self._announce(self.page, self.marker, bridge, timeout)
        self.tab_id = tab
        self.parked_reason = None
        log.info("slot %s ready on tab %s (%s)", self.name, tab, self.start_url)
        return tab

    async def _announce(self, page: Page, marker: str, bridge: BridgeServer, timeout: float) -> int:
        """Load the start URL with `marker` in `page` and wait for its addon; its tab id.

        Parks the slot (and raises `SlotParked`) when the page says it cannot take jobs.
        """
        if page.url.split("#", 1)[0] == self.start_url:
            # Only the fragment would change: a same-document navigation that does not reload
            # the page (nor re-inject the addon). Set the new marker, then reload.
            await page.evaluate("marker => { location.hash = marker; }", marker)
            await page.reload(wait_until="domcontentloaded")
        else:
            await page.goto(self.start_url + marker, wait_until="domcontentloaded")
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
        return tab

    async def open_chat(
        self, context: BrowserContext, bridge: BridgeServer, chat_id: str, timeout: float
    ) -> ChatTab:
        """A new tab for chat `chat_id` (replacing any it had here), its addon ready; `busy`
        until the caller's message is over.

        Beyond `MAX_CHATS_PER_SLOT` the least recently used idle chat tab is closed first.
        """
        await self.close_chat(chat_id, bridge)
        idle = sorted((t for t in self.chats.values() if not t.busy), key=lambda t: t.last_used)
        for evicted in idle[: max(0, len(self.chats) + 1 - MAX_CHATS_PER_SLOT)]:
            log.info("slot %s: closing chat %s to make room", self.name, evicted.chat_id)
            await self.close_chat(evicted.chat_id, bridge)
        page = await context.new_page()
        marker = f"#semantest-slot={self.name}.chat.{secrets.token_hex(4)}"
        try:
            tab_id = await self._announce(page, marker, bridge, timeout)
        except BaseException:
            await page.close()
            raise
        tab = ChatTab(chat_id, page, tab_id, marker, busy=True)  # opened for a message
        page.on("crash", lambda _page: self._chat_crashed(tab))
        self.chats[chat_id] = tab
        log.info("slot %s: chat %s opened on tab %s", self.name, chat_id, tab_id)
        return tab

    async def chat_tab(self, chat_id: str, bridge: BridgeServer, timeout: float) -> ChatTab | None:
        """The open tab of chat `chat_id`, its addon ready; None when the conversation is lost.

        An addon that is not registered right now (the extension's service worker restarted)
        announces itself again from the same page: that is waited for, up to `timeout`.
        """
        tab = self.chats.get(chat_id)
        if tab is None or tab.gone:
            return None
        ready = bridge.state.tabs.get(tab.tab_id)
        if ready is None or not ready.url.endswith(tab.marker):
            marker = tab.marker
            try:
                tab.tab_id = await bridge.wait_for_tab(lambda r: r.url.endswith(marker), timeout)
            except TimeoutError:
                return None
        tab.last_used = time.monotonic()
        return tab

    async def close_chat(self, chat_id: str, bridge: BridgeServer) -> None:
        """Close chat `chat_id`'s tab here, if it has one; its conversation ends."""
        tab = self.chats.pop(chat_id, None)
        if tab is None:
            return
        bridge.state.tabs.pop(tab.tab_id, None)
        if not tab.page.is_closed():
            try:
                await tab.page.close()
            except Exception as exc:  # the browser may be going away
                log.warning("slot %s: closing chat %s failed: %s", self.name, chat_id, exc)

    def _chat_crashed(self, tab: ChatTab) -> None:
        log.error("slot %s: chat %s's page crashed; the chat ended", self.name, tab.chat_id)
        tab.crashed = True
        if tab.busy:
            self.stop_attempt("crash", "the chat's page crashed")

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
