"""Chat sessions on an agent: which tab a chat message runs in, and closing chats that ended.

A chat's first message opens a fresh tab in the slot that took it (`Slot.open_chat`) and binds
the chat to that slot's worker (`ChatRecord.worker`); the controller queues every follow-up
for that worker alone (`keys.slot_queue`), and the follow-up types into the same tab. A
follow-up that reaches anything else — another worker (its agent restarted or died and the
reaper handed the job on), or a slot whose tab for it is gone — fails at once and is never
retried: its conversation cannot be rebuilt elsewhere, and typing it twice into one would
corrupt it.

`close_ended` runs with each heartbeat and closes the tabs of chats that ended (their record
expired after `chat_idle_s` without a message) or that were bound elsewhere since. A stopping
agent puts the follow-ups still waiting for its slots back on their queues
(`return_follow_ups`), where the slot that takes one fails it with `AGENT_LOST`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from rq import Queue
from rq.job import Job

from agents.slots import ChatTab, Slot
from extension_bridge.protocol import ChatTurn
from semantest import keys
from semantest.chat_models import ChatRecord
from semantest.chats import SLOT_GONE, ChatStore
from semantest.errors import JobFailure
from semantest.leases import RETURN_SLOT_QUEUE_LUA
from semantest.models import JobRecord

if TYPE_CHECKING:
    from agents.runtime import AgentRuntime

log = logging.getLogger(__name__)

#: Seconds a follow-up waits for its tab's addon to announce itself again (see `chat_tab`).
READY_AGAIN_S = 5.0


def store(rt: AgentRuntime) -> ChatStore:
    """The chat records of this agent's Redis."""
    return ChatStore(rt.redis, rt.settings.chat_idle_s)


async def chat_of(rt: AgentRuntime, record: JobRecord) -> ChatRecord:
    """The chat of message `record`; a non-retryable `CHAT_ENDED` failure when it is gone."""
    assert record.chat_id is not None
    chat = await store(rt).get(record.chat_id)
    if chat is None:
        raise JobFailure(
            f"chat {record.chat_id} ended (no message for {rt.settings.chat_idle_s} s); "
            "start a new chat",
            "CHAT_ENDED",
        )
    return chat


async def tab_for(
    rt: AgentRuntime, slot: Slot, record: JobRecord, chat: ChatRecord, worker: str, within: float
) -> tuple[ChatTab, ChatTurn]:
    """The tab chat message `record` runs in, and what the addon is told about the turn.

    Raises a non-retryable `JobFailure`: `CHAT_ENDED` when the chat or its tab is gone,
    `AGENT_LOST` when the chat is held by another slot worker (see the module docstring).
    """
    assert rt.browser is not None
    chats = store(rt)
    if chat.first_job_id == record.id:  # every attempt of the first message starts afresh
        tab = await slot.open_chat(rt.browser.context, rt.bridge, chat.id, within)

        def bind(c: ChatRecord) -> None:
            c.worker, c.slot, c.last_used_at = worker, slot.name, time.time()

        try:
            await chats.update(chat.id, bind)
        except KeyError:
            await slot.close_chat(chat.id, rt.bridge)
            raise JobFailure(f"chat {chat.id} ended before it started", "CHAT_ENDED") from None
        except BaseException:  # not bound (stopped, Redis down): the sweep closes the tab
            tab.busy = False
            raise
        return tab, ChatTurn(chat_id=chat.id, new=True)
    if chat.worker != worker:
        log.warning(
            "chat %s: follow-up %s reached %s, not %s", chat.id, record.id, worker, chat.worker
        )
        raise JobFailure(SLOT_GONE, "AGENT_LOST")
    found = await slot.chat_tab(chat.id, rt.bridge, min(READY_AGAIN_S, within))
    if found is None:
        raise JobFailure(
            f"chat {chat.id}'s tab is gone (closed to make room, or its page crashed); "
            "start a new chat",
            "CHAT_ENDED",
        )
    found.busy = True  # the sweep leaves it alone until the attempt is over
    return found, ChatTurn(chat_id=chat.id, new=False)


async def turn_answered(rt: AgentRuntime, record: JobRecord) -> None:
    """Count an answered message of `record`'s chat (and renew the chat's life)."""
    assert record.chat_id is not None

    def count(c: ChatRecord) -> None:
        c.turns, c.last_used_at = c.turns + 1, time.time()

    with contextlib.suppress(KeyError):  # ended meanwhile: the sweep closes its tab
        await store(rt).update(record.chat_id, count)


async def close_ended(rt: AgentRuntime) -> None:
    """Close the tabs of chats that ended or are bound to another worker now."""
    open_tabs = [(slot, tab) for slot in rt.slots for tab in list(slot.chats.values())]
    if not open_tabs:
        return
    records = await store(rt).many([tab.chat_id for _slot, tab in open_tabs])
    for slot, tab in open_tabs:
        if tab.busy:
            continue
        chat = records.get(tab.chat_id)
        if chat is None or tab.gone or chat.worker != f"{slot.name}@{rt.boot}":
            log.info("slot %s: chat %s ended; closing its tab", slot.name, tab.chat_id)
            await slot.close_chat(tab.chat_id, rt.bridge)


async def return_follow_ups(rt: AgentRuntime) -> None:
    """The agent stops: the jobs waiting for its slots alone go back to their queues."""
    for slot in rt.slots:
        moved = await rt.redis.eval(
            RETURN_SLOT_QUEUE_LUA,
            1,
            keys.slot_queue(f"{slot.name}@{rt.boot}"),
            Job.redis_job_namespace_prefix,
            Queue.redis_queue_namespace_prefix,
            "",
        )
        if moved:
            log.info("slot %s: %d chat follow-up(s) back on their queues", slot.name, len(moved))
