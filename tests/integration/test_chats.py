"""Chat records and a gone slot's follow-ups against a real redis-server."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.asyncio import Redis

from semantest import keys
from semantest.chat_models import ChatRecord
from semantest.chats import ChatStore, worker_alive
from semantest.leases import return_slot_queue

pytestmark = pytest.mark.integration

DB = 32


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/{DB}")
    yield client
    await client.aclose()


@pytest.fixture
def sredis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/{DB}")
    yield client
    client.close()


def new_chat() -> ChatRecord:
    return ChatRecord(tenant="t", provider="sandbox", first_job_id=uuid.uuid4().hex)


async def test_a_chat_lives_its_idle_time_past_each_change(aredis: Redis) -> None:
    chats = ChatStore(aredis, idle_s=30)
    chat = new_chat()
    await chats.create(chat)
    assert await chats.get(chat.id) == chat
    assert 0 < await aredis.ttl(keys.chat(chat.id)) <= 30
    await aredis.expire(keys.chat(chat.id), 3)

    def bind(c: ChatRecord) -> None:
        c.worker, c.turns = "agent-1/0@abcd", c.turns + 1

    bound = await chats.update(chat.id, bind)
    assert bound.worker == "agent-1/0@abcd" and bound.turns == 1
    assert await aredis.ttl(keys.chat(chat.id)) > 3  # renewed by the change
    assert (await chats.many([chat.id, "nope"])) == {chat.id: bound, "nope": None}
    with pytest.raises(KeyError):
        await chats.update("nope", bind)
    assert await chats.get("nope") is None


async def test_a_slot_worker_is_alive_only_with_its_own_boot(aredis: Redis) -> None:
    agent = f"agent-{uuid.uuid4().hex[:6]}"
    assert not await worker_alive(aredis, f"{agent}/0@b1")
    await aredis.zadd(keys.AGENTS, {agent: time.time()})
    await aredis.set(keys.agent(agent), json.dumps({"boot": "b1"}), ex=10)
    assert await worker_alive(aredis, f"{agent}/0@b1")
    assert not await worker_alive(aredis, f"{agent}/0@b2")  # restarted: another boot
    assert not await worker_alive(aredis, "not a worker name")


def test_a_gone_slots_follow_ups_go_back_to_the_front_of_their_queues(
    sredis: redis.Redis,
) -> None:
    worker = f"agent-{uuid.uuid4().hex[:6]}/1@dead"
    origin = f"semantest.sandbox.normal.{uuid.uuid4().hex[:6]}"
    queue = f"rq:queue:{origin}"
    sredis.rpush(queue, "older")
    ids = [uuid.uuid4().hex for _ in range(3)]
    for job_id in ids:
        sredis.hset(f"rq:job:{job_id}", "origin", origin)
        sredis.rpush(keys.slot_queue(worker), job_id)
    sredis.rpush(keys.slot_queue(worker), "no-such-job")  # no RQ hash: dropped

    # One id (what the route does for the job it just queued), then all of them.
    assert return_slot_queue(sredis, worker, ids[1]) == [ids[1]]
    assert return_slot_queue(sredis, worker, ids[1]) == []  # not there any more
    assert return_slot_queue(sredis, worker) == [ids[0], ids[2]]
    assert sredis.llen(keys.slot_queue(worker)) == 0
    front = [v.decode() for v in sredis.lrange(queue, 0, -1)]
    assert front == [ids[2], ids[0], ids[1], "older"]
