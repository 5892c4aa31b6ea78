"""One attempt of one job on one slot, from its lease to how it ended.

`Attempt.run()` runs the prompt through the slot's addon under one deadline (`job_timeout_s`
from the lease), fetches and stores the images, and records the outcome. Every record write is
fenced by the attempt's lease token, so an attempt that lost its lease (its agent was presumed
dead) can never overwrite the one that replaced it. A deadline that passes, or a stop from
outside (drain, stale lease, page crash), cancels the attempt on the agent loop, tells the addon
`job.cancel`, and frees the slot.

A chat message (`record.chat_id`) runs in its chat's own tab (`agents/chat_tabs.py`) and
records the reply's text; it wants an image only when `record.generate_image`. A failed
follow-up is never retried (its conversation lives in this tab only, and a retry would type the
message twice), and a draining agent fails it instead of giving it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import aiofiles
import aiofiles.os
from playwright.async_api import ConsoleMessage, Page

from agents import capture, chat_tabs
from agents.slots import PARKING_CODES, RELOAD_EVERY_JOBS, ChatTab, Slot
from extension_bridge.protocol import ChatTurn, JobProgress, JobRun
from semantest import attempts, keys, metrics, routing, tracing
from semantest.chats import SLOT_GONE
from semantest.errors import GenerationFailed, JobFailure, RetryableFailure
from semantest.jobstore import StaleLease, TerminalRecord
from semantest.models import ImageRecord, JobRecord, JobStatus, Stage

if TYPE_CHECKING:
    from agents.runtime import AgentRuntime

log = logging.getLogger(__name__)
T = TypeVar("T")

SLOT_OPEN_TIMEOUT_S = 30.0
#: Console lines one attempt keeps as evidence (the first ones: what led to the failure).
CONSOLE_LINES = 2000


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as RQ's job function needs to know it."""

    kind: Literal["succeeded", "retry", "failed", "skipped"]
    job_id: str
    delay_s: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


class Aborted(Exception):
    """The slot's attempt was stopped from outside (see `Slot.stop_attempt`)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class Attempt:
    """One attempt that holds its lease: `run()` it once."""

    def __init__(
        self, runtime: AgentRuntime, slot: Slot, record: JobRecord, lease: str, deadline: float
    ) -> None:
        self.runtime, self.slot, self.record = runtime, slot, record
        self.lease, self.deadline = lease, deadline
        #: A chat message: whether it is the chat's first, its tab and turn, once known (see
        #: `agents/chat_tabs.py`).
        self.first_message: bool | None = None
        self.chat_tab: ChatTab | None = None
        self.turn: ChatTurn | None = None
        #: What the evidence of a failed attempt keeps besides the page: its console and what
        #: the addon last reported.
        self.tab: int | None = None
        self.console: list[str] = []
        self.console_page: Page | None = None
        self.last_progress: dict[str, Any] | None = None

    @property
    def follow_up(self) -> bool:
        """A chat message after the first: it can only run in its chat's tab."""
        return self.first_message is False

    async def run(self) -> Outcome:
        """Run the attempt under its deadline and record how it ended."""
        record, slot = self.record, self.slot
        parent = None
        if tracing.enabled():  # the submit span's context, and the time the job queued
            parent = tracing.parent_of(await self.runtime.redis.get(keys.job_trace(record.id)))
            if record.attempts == 1:
                tracing.record_span(
                    "semantest.queue", parent, record.created_at, record.started_at or time.time()
                )
        log.info("job %s attempt %d on %s", record.id, record.attempts, slot.name)
        attributes = {"job.id": record.id, "agent.slot": slot.name, "attempt": record.attempts}
        try:
            with tracing.span("semantest.attempt", parent=parent, attributes=attributes):
                outcome = await self._run()
            metrics.ATTEMPTS.labels(record.provider, outcome.kind).inc()
            log.info("job %s attempt %d: %s", record.id, record.attempts, outcome.kind)
            return outcome
        finally:
            if self.chat_tab is not None:
                self.chat_tab.busy = False
            if self.console_page is not None:
                self.console_page.remove_listener("console", self._on_console)

    def _on_console(self, message: ConsoleMessage) -> None:
        if len(self.console) < CONSOLE_LINES:
            self.console.append(f"{time.time():.3f} {message.type}: {message.text}")

    async def _run(self) -> Outcome:
        record, slot, deadline = self.record, self.slot, self.deadline
        job_id, lease, rt = record.id, self.lease, self.runtime
        timer = asyncio.timeout_at(deadline)
        try:
            async with timer:
                images, reply = await self._abortable(self._work())
        except (StaleLease, TerminalRecord):
            return Outcome("skipped", job_id)
        except Aborted as stop:
            await self._cancel_in_tab(stop.reason)
            if stop.kind in ("stale", "canceled"):  # the record is another's, or final
                return Outcome("skipped", job_id)
            if stop.kind == "drain" and self.follow_up:  # its tab closes with the browser
                return await self._failed(JobFailure(SLOT_GONE, "AGENT_LOST"))
            if stop.kind == "drain":
                return await self._give_back(stop.reason)
            return await self._failed(RetryableFailure(stop.reason, "AGENT_ERROR"))
        except TimeoutError:
            if not timer.expired():
                raise
            await self._cancel_in_tab("deadline")
            failure = RetryableFailure(
                f"no result within the job timeout ({rt.settings.job_timeout_s} s)", "TIMEOUT"
            )
            return await self._failed(failure)
        except JobFailure as failure:
            return await self._failed(failure)
        except Exception as exc:  # a bug or a browser crash: retryable, with the cause recorded
            log.exception("job %s crashed", job_id)
            return await self._failed(RetryableFailure(repr(exc)))

        def succeed(r: JobRecord) -> None:
            r.status, r.progress, r.stage = JobStatus.SUCCEEDED, 100, Stage.DONE
            r.images, r.error, r.finished_at, r.lease = images, None, time.time(), None
            r.reply = reply

        try:
            await rt.jobs.update(job_id, succeed, lease=lease)
        except (StaleLease, TerminalRecord):  # another attempt or a cancel got there first
            return Outcome("skipped", job_id)
        slot.jobs_done += 1
        if record.chat_id is not None:
            await chat_tabs.turn_answered(rt, record)
            return Outcome("succeeded", job_id, detail={"images": [i.sha256 for i in images]})
        slot.untidy = True  # chat tabs are never tidied: their conversation must stay
        if slot.jobs_done % RELOAD_EVERY_JOBS == 0:  # bounded growth under sustained load
            await rt.tidy(slot)
        return Outcome("succeeded", job_id, detail={"images": [i.sha256 for i in images]})

    async def _abortable(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` until it ends or the slot's attempt is stopped from outside."""
        slot = self.slot
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(slot.abort.wait())
        try:
            await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task.cancelled() or not task.done():
            raise Aborted(slot.abort_kind, slot.abort_reason)
        return task.result()

    async def _work(self) -> tuple[list[ImageRecord], str | None]:
        """Open the slot (or the chat's tab), run the prompt through its addon, fetch and store
        the images; the images and, for a chat message, the reply's text."""
        rt, record, slot, deadline = self.runtime, self.record, self.slot, self.deadline
        assert rt.browser is not None
        loop = asyncio.get_running_loop()
        await self._progress(5, Stage.OPENING, JobStatus.RUNNING)
        open_within = min(SLOT_OPEN_TIMEOUT_S, max(1.0, deadline - loop.time()))
        if record.chat_id is not None:
            chat = await chat_tabs.chat_of(rt, record)
            self.first_message = chat.first_job_id == record.id
            worker = self.lease.rpartition("#")[0]
            self.chat_tab, self.turn = await chat_tabs.tab_for(
                rt, slot, record, chat, worker, open_within
            )
            tab = self.chat_tab.tab_id
        else:
            tab = await slot.ready_tab(rt.browser.context, rt.bridge, open_within)
        self.tab = tab
        page = self.chat_tab.page if self.chat_tab is not None else slot.page
        if page is not None:  # the console of this attempt, kept as evidence if it fails
            page.on("console", self._on_console)
            self.console_page = page

        async def on_progress(msg: JobProgress) -> None:
            self.last_progress = msg.model_dump(mode="json", by_alias=True)
            stage = Stage(msg.stage) if msg.stage in Stage._value2member_map_ else Stage.WAITING
            try:
                await self._progress(min(msg.progress, 89), stage)
            except (StaleLease, TerminalRecord):
                slot.stop_attempt("stale", "another attempt holds the job now")

        left_ms = int((deadline - loop.time()) * 1000)
        run = JobRun(
            tab_id=tab,
            job_id=record.id,
            prompt=record.prompt,
            options=record.options.model_dump(by_alias=True, exclude_none=True),
            timeout_ms=max(1, left_ms),
            chat=self.turn,
            generate_image=record.generate_image,
        )
        try:
            # The bridge's own wait ends just after the deadline, so the deadline decides.
            with tracing.span("semantest.bridge", attributes={"tab.id": tab}):
                result = await rt.bridge.run_job(run, on_progress, left_ms / 1000 + 1)
        except JobFailure as failure:
            if failure.job_code in PARKING_CODES:  # the retry goes to another slot
                slot.park(PARKING_CODES[failure.job_code], failure.retry_after_s)
                await rt.beat()  # show the parked slot in /fleet now, not at the next beat
            elif failure.retryable and self.chat_tab is None:
                slot.forget_tab()
            raise
        reply = result.reply if record.chat_id is not None else None
        if record.generate_image and not result.images:
            raise GenerationFailed("the provider answered without an image")
        if not result.images and not (reply or "").strip():
            raise GenerationFailed("the provider answered with nothing")
        await self._progress(90, Stage.STORING)
        stored = []
        with tracing.span("semantest.store", attributes={"images": len(result.images)}):
            for image in result.images:
                data, content_type = await capture.fetch_bytes(
                    rt.browser.context.request, image, rt.settings.max_image_bytes
                )
                stored.append(
                    await capture.store_image(
                        rt.storage,
                        record.tenant,
                        data,
                        content_type,
                        source_url=image.url,
                    )
                )
        return stored, reply

    async def _progress(self, progress: int, stage: Stage, status: JobStatus | None = None) -> None:
        def change(r: JobRecord) -> None:
            r.progress, r.stage = max(r.progress, progress), stage
            if status is not None:
                r.status = status

        await self.runtime.jobs.update(self.record.id, change, lease=self.lease)

    async def _cancel_in_tab(self, reason: str) -> None:
        """Tell the addon to stop, and reload the page before the slot's next job.

        A chat's tab is not reloaded (that would end its conversation): a follow-up typed while
        the stopped reply still streams fails with `ADDON_BUSY`.
        """
        if self.chat_tab is not None:
            await self.runtime.bridge.cancel_job(self.chat_tab.tab_id, self.record.id, reason)
            return
        if self.slot.tab_id is not None:
            await self.runtime.bridge.cancel_job(self.slot.tab_id, self.record.id, reason)
        self.slot.forget_tab()

    async def _failed(self, failure: JobFailure) -> Outcome:
        """Record a failed attempt as the retry policy decides; the outcome tells RQ."""
        artifacts = await self._evidence(failure)
        # A follow-up's conversation is in this slot's tab only, and the provider may have seen
        # the message already: another attempt could not help.
        retryable = failure.retryable and not self.follow_up
        return await settle_failure(
            self.runtime, self.record, self.lease, failure, retryable, artifacts
        )

    async def _give_back(self, reason: str) -> Outcome:
        """The agent is stopping: the job goes back to the queue without using an attempt."""
        return await give_back(self.runtime, self.record, self.lease, reason)

    async def _evidence(self, failure: JobFailure) -> dict[str, str]:
        """Keep what shows why the attempt failed, next to the job's other attempts':
        `artifacts/<jobId>/<attempt>/` holds the page's screenshot and DOM, the console
        during the attempt and the addon's last reported state; the record names them
        relative to the job's folder (`<attempt>/<file>`), the API serves them."""
        page = self.chat_tab.page if self.chat_tab is not None else self.slot.page
        record = self.record
        if record.chat_id is not None and self.chat_tab is None:
            page = None  # failed before reaching its chat's tab: no page shows anything of it
        attempt = str(record.attempts)
        folder: Path = self.runtime.settings.data_dir / "artifacts" / record.id / attempt
        kept: dict[str, str] = {}
        ready = self.runtime.bridge.state.tabs.get(self.tab) if self.tab is not None else None
        state = {
            "provider": record.provider,
            "slot": self.slot.name,
            "tab": self.tab,
            "addon": ready.model_dump(mode="json", by_alias=True) if ready else None,
            "lastProgress": self.last_progress,
            "error": {"code": failure.job_code, "message": failure.message},
            "retryAfterS": failure.retry_after_s,
        }
        try:
            await aiofiles.os.makedirs(folder, exist_ok=True)
            for name, file, text in (
                ("state", "state.json", json.dumps(state, indent=2)),
                ("console", "console.log", "\n".join(self.console) + "\n"),
            ):
                async with aiofiles.open(folder / file, "w") as f:
                    await f.write(text)
                kept[name] = f"{attempt}/{file}"
            if page is not None and not page.is_closed():
                await page.screenshot(path=folder / "screenshot.png", timeout=5000)
                kept["screenshot"] = f"{attempt}/screenshot.png"
                async with aiofiles.open(folder / "dom.html", "w") as f:
                    await f.write(await asyncio.wait_for(page.content(), 5))
                kept["dom"] = f"{attempt}/dom.html"
        except Exception as exc:
            log.warning("could not keep all evidence of %s: %s", record.id, exc)
        return kept


async def settle_failure(
    runtime: AgentRuntime,
    record: JobRecord,
    lease: str,
    failure: JobFailure,
    retryable: bool,
    artifacts: dict[str, str] | None = None,
) -> Outcome:
    """Record a failed attempt of any worker (browser or API) and tell RQ what follows.

    The retry policy (`attempts.decide`) decides; a job given a list of providers fails over
    at once to the next healthy one with a free slot (`attempts.fail_over`).
    """
    settings = runtime.settings
    decided: list[attempts.Decision] = []
    moved: list[str] = []
    bad: set[str] = set()
    room: set[str] = set()
    if record.providers:  # where it could fail over to
        bad = await routing.degraded(runtime.redis)
        room = await routing.capacity(runtime.redis)

    def fail(r: JobRecord) -> None:
        moved.clear()
        decision = attempts.decide(r, retryable, settings, wait_s=failure.retry_after_s)
        attempts.record_failure(r, failure.job_code, failure.message, decision, artifacts)
        target = attempts.fail_over(r, failure.job_code, bad, room)
        if target is not None:  # another provider: no reason to wait for this one
            decision = attempts.Decision(retry=True, delay_s=0)
            moved.append(target)
        decided.clear()
        decided.append(decision)

    try:
        await runtime.jobs.update(record.id, fail, lease=lease)
    except (StaleLease, TerminalRecord):
        return Outcome("skipped", record.id)
    (decision,) = decided
    log.warning(
        "job %s attempt %d: %s %s (%s)",
        record.id,
        record.attempts,
        failure.job_code,
        failure.message,
        f"retry in {decision.delay_s} s" if decision.retry else "failed",
    )
    if moved:
        log.info("job %s fails over to %s", record.id, moved[0])
        queue = keys.queue_name(moved[0], record.priority.value)
        return Outcome("retry", record.id, detail={"failover": queue})
    if decision.retry:
        return Outcome("retry", record.id, delay_s=decision.delay_s)
    return Outcome("failed", record.id, detail={"error": failure.job_code})


async def give_back(runtime: AgentRuntime, record: JobRecord, lease: str, reason: str) -> Outcome:
    """The worker is stopping: the job goes back to its queue without using an attempt."""
    try:
        await runtime.jobs.update(
            record.id, lambda r: attempts.requeue_uncharged(r, reason), lease=lease
        )
    except (StaleLease, TerminalRecord):
        return Outcome("skipped", record.id)
    log.info("job %s given back: %s", record.id, reason)
    return Outcome("retry", record.id, delay_s=0)
