"""What the app holds for its lifetime (clients, registry, storage) and how routes get it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from addons.registry import Registry
from semantest.config import Settings
from semantest.jobstore import JobStore
from semantest.storage import Storage

if TYPE_CHECKING:
    from controller.submission import Submitter


@dataclass
class AppState:
    """Long-lived objects of one controller process."""

    settings: Settings
    redis: Redis
    #: For RQ's synchronous API (the retry scheduler, the lease reaper).
    redis_sync: SyncRedis
    jobs: JobStore
    registry: Registry
    #: Local or S3, as the settings choose (`storage_from_settings`).
    storage: Storage
    #: Stores and queues jobs (one script per submission).
    submitter: Submitter
    #: sha256 of each API key → tenant. Keys are never kept in clear.
    key_hashes: dict[str, str]


def hash_key(key: str) -> str:
    """How API keys are stored and compared."""
    return hashlib.sha256(key.encode()).hexdigest()


async def get_state(request: Request) -> AppState:
    """The app's state (FastAPI dependency; async, so FastAPI does not hop to a thread)."""
    state: AppState = request.app.state.semantest
    return state


State = Annotated[AppState, Depends(get_state)]
