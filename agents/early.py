"""Start Playwright's driver before the agent's heavy imports, so the two overlap.

The driver is a Node process that takes ~0.3 s to come up; importing RQ, redis, pydantic models
and the runtime takes about as long. `python -m agents` starts the agent loop thread and the
driver first (this module imports only asyncio and Playwright), then imports the rest while
the driver boots. Part of cold start (process start → slots ready).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading

from playwright.async_api import Playwright, async_playwright

#: V8 options for Playwright's Node driver (it inherits NODE_OPTIONS): a 1 MB young generation
#: keeps its idle heap small (-17 MB measured); the driver only relays protocol messages.
DRIVER_NODE_OPTIONS = "--max-semi-space-size=1"


class AgentLoop:
    """The agent's asyncio loop on its own thread, with Playwright's driver starting on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="agent-loop", daemon=True)
        self.thread.start()
        os.environ["NODE_OPTIONS"] = DRIVER_NODE_OPTIONS  # read by the driver it spawns
        self.playwright: concurrent.futures.Future[Playwright] = asyncio.run_coroutine_threadsafe(
            _start_driver(), self.loop
        )


async def _start_driver() -> Playwright:
    return await async_playwright().start()
