"""A tab slot: one provider page in the agent's browser, and the addon tab id behind it.

A slot is (re)opened by navigating its page to the provider's start URL and waiting for the
addon in it to announce itself over the bridge; after that jobs go to that tab id until the
addon disappears (then the next job reopens the slot).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from playwright.async_api import BrowserContext, Page

from extension_bridge.server import BridgeServer

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """One provider page that runs one job at a time."""

    name: str
    start_url: str
    page: Page | None = None
    tab_id: int | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def ready_tab(self, context: BrowserContext, bridge: BridgeServer, timeout: float) -> int:
        """The tab id of this slot's addon, opening or reloading the page when needed."""
        if self.tab_id is not None and self.tab_id in bridge.state.tabs:
            return self.tab_id
        if self.page is None or self.page.is_closed():
            self.page = await context.new_page()
        seen = {ready.id for ready in bridge.state.tabs.values()}
        bridge.state.tabs.pop(self.tab_id or -1, None)
        await self.page.goto(self.start_url, wait_until="domcontentloaded")
        self.tab_id = await bridge.wait_for_tab(
            lambda r: r.id not in seen and r.url.startswith(self.start_url), timeout
        )
        log.info("slot %s ready on tab %s (%s)", self.name, self.tab_id, self.start_url)
        return self.tab_id

    def forget_tab(self) -> None:
        """The addon is gone or broken: reopen before the next job."""
        self.tab_id = None
