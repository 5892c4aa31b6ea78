"""Chat records in Redis: create, read, change atomically, and whether a chat's slot lives.

The controller creates a chat and renews it with every message; the agent that runs the
first message binds the chat to its slot's worker, and counts answered turns. A record lives
`Settings.chat_idle_s` past its last change: the conversation's tab lives as long (the agent
closes tabs whose chat is gone, see `agents/chat_tabs.py`), so "the record exists" is "the chat
can be continued".
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import WatchError

from semantest import keys
from semantest.chat_models import ChatRecord
from semantest.leases import agent_of, live_boots

#: What a follow-up of a chat whose slot is gone fails with (job error code `AGENT_LOST`).
SLOT_GONE = "the chat's browser slot is gone; start a new chat"


class ChatStore:
    """Typed access to chat records; one instance per Redis client."""

    def __init__(self, redis: Redis, idle_s: int) -> None:
        self.redis = redis
        self.idle_s = idle_s

    async def create(self, chat: ChatRecord) -> None:
        """Store a new chat (refused silently if the id exists: ids are random)."""
        await self.redis.set(keys.chat(chat.id), chat.to_json(), ex=self.idle_s, nx=True)

    async def get(self, chat_id: str) -> ChatRecord | None:
        """The chat, or None when there is none (never was, or ended)."""
        raw = await self.redis.get(keys.chat(chat_id))
        return None if raw is None else ChatRecord.model_validate_json(raw)

    async def many(self, chat_ids: list[str]) -> dict[str, ChatRecord | None]:
        """Several chats in one round trip."""
        if not chat_ids:
            return {}
        raws = await self.redis.mget([keys.chat(c) for c in chat_ids])
        return {
            chat_id: None if raw is None else ChatRecord.model_validate_json(raw)
            for chat_id, raw in zip(chat_ids, raws, strict=True)
        }

    async def update(self, chat_id: str, change: Callable[[ChatRecord], None]) -> ChatRecord:
        """Apply `change` atomically and renew the chat's life; `KeyError` when it is gone."""
        key = keys.chat(chat_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise KeyError(chat_id)
                    chat = ChatRecord.model_validate_json(raw)
                    change(chat)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, chat.to_json(), ex=self.idle_s)
                    await pipe.execute()
                    return chat
                except WatchError:
                    continue


async def worker_alive(redis: Redis, worker: str) -> bool:
    """Whether the agent of RQ worker `<agent>/<slot>@<boot>` still heart-beats with that boot.

    The same test the lease reaper applies to running jobs: a restarted agent (another boot)
    has lost its tabs, and so its chats.
    """
    owner = agent_of(worker)
    return owner is not None and (await live_boots(redis)).get(owner[0]) == owner[1]
