"""Live feeds: the events of one job, or of every job of a batch, read from their Redis streams
in one order that a client can resume from any event of.

The agents already append every change of a record to the job's stream (`JobStore.update`);
a feed only reads. One job's stream is ordered by its entry ids. A batch's feed merges its
jobs' streams by (entry id, job id), and hands out an entry only once no entry that sorts
before it can still be written: each read takes Redis's clock (`TIME`) and the streams in
one script, so every entry of an earlier millisecond is already in the read, and an entry of
the current millisecond waits for the next one. The merged order therefore never changes
after the fact, and one position (`<jobId>:<entry id>`) says exactly which entries of every
stream a client has: the ones that sort at or before it (`Feed.open` turns it back into a
position per stream). That needs a Redis clock that does not step backwards; if it does,
entries stamped in the future are handed out at once rather than held (live delivery goes
on; a resume across that moment may repeat or skip those entries).

Blocking reads (XREAD BLOCK) hold a connection each, so they use their own pool, bounded by
`SEMANTEST_LIVE_STREAMS_MAX` open feeds per controller process; past it a feed is refused with
`Unavailable` (503, Retry-After). Other reads use the app's shared client.

Imports the kernel only; routes live in controller/routes/events.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import anyio
from pydantic import ValidationError as PydanticError
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from semantest import keys
from semantest.errors import Unavailable, ValidationError
from semantest.models import JobEvent
from semantest.redis_clients import async_client

log = logging.getLogger(__name__)

#: Entries read per stream and step; a longer backlog is read over several steps.
READ_COUNT = 200
#: Entries stamped this far past Redis's clock mean it stepped back: they are not held.
CLOCK_SLACK_MS = 2000
#: How long an entry of the current millisecond waits before the next read.
HOLD_S = 0.002
#: Seconds a client refused at the bound is asked to wait.
RETRY_AFTER_S = 5

_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")

#: TIME and XREAD in one atomic step. KEYS: streams; ARGV[1]: count; ARGV[2..]: last ids.
SNAPSHOT_LUA = """
local args = {'XREAD', 'COUNT', ARGV[1], 'STREAMS'}
for i = 1, #KEYS do args[#args + 1] = KEYS[i] end
for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
return {redis.call('TIME'), redis.call(unpack(args))}
"""

Key = tuple[int, int, str]


def entry_key(entry_id: str, job_id: str) -> Key:
    """Where an entry sorts in a merged feed: (milliseconds, sequence, job id)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq), job_id


@dataclass(frozen=True)
class Position:
    """The last entry a client has: `entry_id` of `job_id`'s stream."""

    job_id: str
    entry_id: str

    @classmethod
    def parse(cls, raw: str, job_ids: Sequence[str], field_name: str) -> Position:
        """A position sent back by a client (`<entry id>` for a job feed, `<jobId>:<entry id>`
        for either), or `ValidationError` naming `field_name`."""
        job_id, colon, entry_id = raw.strip().rpartition(":")
        if not colon and len(job_ids) == 1:
            job_id = job_ids[0]
        if job_id not in job_ids or not _ENTRY_ID.match(entry_id):
            reason = "send back an event id of this stream unchanged"
            raise ValidationError(
                f"invalid {field_name}", [{"field": field_name, "reason": reason}]
            )
        return cls(job_id, entry_id)


@dataclass(frozen=True)
class Delivered:
    """One entry handed out, with the id a client resumes from."""

    id: str
    job_id: str
    event: JobEvent


class LiveFeeds:
    """The process's live feeds: their connection pool, its bound, and shutdown."""

    def __init__(self, redis_url: str, limit: int, heartbeat_s: float) -> None:
        self.limit = limit
        self.heartbeat_s = heartbeat_s
        self.open = 0
        self.stopping = asyncio.Event()
        self._pool = async_client(redis_url, max_connections=limit)

    async def close(self) -> None:
        """Stop every feed and close the pool."""
        self.stopping.set()
        await self._pool.aclose()

    def reserve(self) -> Redis:
        """A connection of its own for one feed's blocking reads, or `Unavailable` at the
        bound; give it back with `release`."""
        if self.open >= self.limit:
            raise Unavailable(
                f"too many open event streams ({self.limit}); retry in {RETRY_AFTER_S} s",
                retry_after_s=RETRY_AFTER_S,
            )
        self.open += 1
        return self._pool.client()

    async def release(self, connection: Redis) -> None:
        """Give a feed's connection back (also when the feed's task is being cancelled)."""
        self.open -= 1
        with anyio.CancelScope(shield=True):
            await connection.aclose()

    @contextlib.contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """While open, SIGINT/SIGTERM also end every feed before the server's handler runs.

        The server (granian, uvicorn) waits for open responses and sockets before it shuts the
        app down, and an event stream does not finish by itself: with one open, SIGTERM did
        not stop the controller in 15 s; chaining the server's handlers lets streams end at
        once (clients reconnect elsewhere with their last id). Signals reach only the main
        thread; a server run in another thread (tests) stops streams when their clients leave.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        chained: dict[int, Any] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.stopping.set)
            previous = chained.get(signum)
            if callable(previous):
                previous(signum, frame)

        for sig in (signal.SIGINT, signal.SIGTERM):
            chained[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for signum, previous in chained.items():
                if signal.getsignal(signum) is handler:
                    signal.signal(signum, previous)


@dataclass
class Feed:
    """The events of `job_ids` after their positions, in one resumable order.

    `batch_id` set: positions are `<jobId>:<entry id>`; else the entry id alone. Iterate
    `items()`; `finished` says whether it ended because every job is final.
    """

    feeds: LiveFeeds
    redis: Redis
    job_ids: list[str]
    batch_id: str | None
    positions: dict[str, str]
    done: set[str]
    #: The last status of each job handed out (or found at the resume position).
    statuses: dict[str, str] = field(default_factory=dict)
    _blocking: Redis | None = None
    _snapshot: AsyncScript | None = None

    @classmethod
    async def open(
        cls,
        feeds: LiveFeeds,
        redis: Redis,
        job_ids: list[str],
        *,
        batch_id: str | None = None,
        since: Position | None = None,
    ) -> Feed:
        """A feed resuming after `since` (from the start without); it holds a connection of
        the bounded pool until `close()`."""
        positions, done, statuses = await _resume(redis, job_ids, since)
        feed = cls(feeds, redis, job_ids, batch_id, positions, done, statuses)
        if not feed.finished:
            feed._snapshot = redis.register_script(SNAPSHOT_LUA)
            feed._blocking = feeds.reserve()
        return feed

    @property
    def finished(self) -> bool:
        """Every job is final and its final event was handed out (or was before `since`)."""
        return len(self.done) == len(self.job_ids)

    async def close(self) -> None:
        """Give the feed's connection back."""
        blocking, self._blocking = self._blocking, None
        if blocking is not None:
            await self.feeds.release(blocking)

    async def items(self) -> AsyncIterator[Delivered | None]:
        """Entries in order as they are written; None when `heartbeat_s` passed without one
        (send a heartbeat). Ends when `finished`, or when the server stops."""
        heartbeat_s = self.feeds.heartbeat_s
        quiet_since = time.monotonic()
        while not self.finished and not self.feeds.stopping.is_set():
            delivered, held = await self._step()
            for item in delivered:
                yield item
            if delivered:
                quiet_since = time.monotonic()
                continue
            if held:
                await asyncio.sleep(HOLD_S)
                continue
            left = heartbeat_s - (time.monotonic() - quiet_since)
            if left <= 0 or not await self._wait(left):
                if not self.feeds.stopping.is_set():
                    yield None
                quiet_since = time.monotonic()

    def end_data(self) -> dict[str, Any]:
        """The data of the stream's `end` event."""
        if self.batch_id is None:
            return {"jobId": self.job_ids[0], "status": self.statuses.get(self.job_ids[0])}
        counts: dict[str, int] = {}
        for status in self.statuses.values():
            counts[status] = counts.get(status, 0) + 1
        return {"batchId": self.batch_id, "counts": counts}

    def _open_jobs(self) -> list[str]:
        return [j for j in self.job_ids if j not in self.done]

    async def _step(self) -> tuple[list[Delivered], bool]:
        """Read every open stream and hand out what can be; also whether entries are held."""
        jobs = self._open_jobs()
        streams = [keys.job_events(j) for j in jobs]
        assert self._snapshot is not None
        args: list[str | int] = [READ_COUNT, *(self.positions[j] for j in jobs)]
        clock, reply = await self._snapshot(keys=streams, args=args)
        now_ms = int(clock[0]) * 1000 + int(clock[1]) // 1000
        job_of = dict(zip(streams, jobs, strict=True))
        found: list[tuple[Key, str, bytes]] = []
        # Entries before `limit` can be handed out: no entry sorting before them is unread.
        clock_limit: Key = (now_ms, 0, "")
        read_limit: Key = (2**64, 0, "")
        for raw_key, entries in reply or []:
            job_id = job_of[_text(raw_key)]
            for raw_id, fields in entries:
                entry_id = _text(raw_id)
                found.append((entry_key(entry_id, job_id), entry_id, _field(fields, b"event")))
            if len(entries) >= READ_COUNT:  # more follow: nothing past its last may go first
                ms, seq, _ = entry_key(_text(entries[-1][0]), job_id)
                read_limit = min(read_limit, (ms, seq, job_id + "\x00"))
        found.sort()
        if found and found[-1][0][0] > now_ms + CLOCK_SLACK_MS:
            log.warning("job events stamped past Redis's clock: its clock stepped back")
            clock_limit = read_limit
        limit = min(clock_limit, read_limit)
        delivered: list[Delivered] = []
        for k, entry_id, raw in found:
            if k >= limit:
                return delivered, True
            job_id = k[2]
            if job_id in self.done:
                continue  # entries after a final one (a final record's own updates)
            self.positions[job_id] = entry_id
            event = _event(raw, job_id, entry_id)
            if event is None:
                continue
            self.statuses[job_id] = event.status.value
            if event.status.terminal:
                self.done.add(job_id)
            position = entry_id if self.batch_id is None else f"{job_id}:{entry_id}"
            delivered.append(Delivered(position, job_id, event))
        return delivered, False

    async def _wait(self, timeout_s: float) -> bool:
        """Block until an open stream has an entry past its position (True), `timeout_s`
        passes or the server stops (False)."""
        assert self._blocking is not None
        streams: dict[Any, Any] = {keys.job_events(j): self.positions[j] for j in self._open_jobs()}
        read = asyncio.ensure_future(
            self._blocking.xread(streams, count=1, block=max(1, int(timeout_s * 1000)))
        )
        stop = asyncio.ensure_future(self.feeds.stopping.wait())
        try:
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (read, stop):
                task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(read, stop, return_exceptions=True)
        return read.done() and not read.cancelled() and bool(read.result())


async def _resume(
    redis: Redis, job_ids: list[str], since: Position | None
) -> tuple[dict[str, str], set[str], dict[str, str]]:
    """Per job: the position to read after, whether it is done, and its last status.

    Without `since`, every stream from its start. With it, each stream's last entry at or
    before `since` in the merged order: inclusive for job ids up to `since.job_id`, exclusive
    after it (equal entry ids sort by job id). A job whose stream is gone (expired) is done.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            stream = keys.job_events(job_id)
            pipe.exists(stream)
            if since is not None:
                inclusive = job_id <= since.job_id
                top = since.entry_id if inclusive else f"({since.entry_id}"
                pipe.xrevrange(stream, max=top, min="-", count=1)
        replies = await pipe.execute()
    positions: dict[str, str] = {}
    done: set[str] = set()
    statuses: dict[str, str] = {}
    step = 1 if since is None else 2
    for index, job_id in enumerate(job_ids):
        exists = replies[index * step]
        last = replies[index * step + 1] if since is not None else []
        positions[job_id] = "0-0"
        if last:
            entry_id, fields = _text(last[0][0]), last[0][1]
            positions[job_id] = entry_id
            event = _event(_field(fields, b"event"), job_id, entry_id)
            if event is not None:
                statuses[job_id] = event.status.value
                if event.status.terminal:
                    done.add(job_id)
        if not exists:
            done.add(job_id)
    return positions, done, statuses


def _event(raw: bytes, job_id: str, entry_id: str) -> JobEvent | None:
    """The stored event, or None (logged) when it does not validate (a newer agent's)."""
    try:
        return JobEvent.model_validate_json(raw)
    except PydanticError as exc:
        log.warning("job %s: event %s skipped, it does not validate: %s", job_id, entry_id, exc)
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: Any, name: bytes) -> bytes:
    """A field of an entry as XREAD (flat list in a script's reply) or XREVRANGE (dict) gives."""
    if isinstance(fields, dict):
        return bytes(fields.get(name, b""))
    pairs: list[bytes] = list(fields)
    for i in range(0, len(pairs) - 1, 2):
        if pairs[i] == name:
            return pairs[i + 1]
    return b""
