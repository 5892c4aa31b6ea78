"""Assemble the controller: settings, clients, routers, error handlers. Nothing else lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI

from addons import ADDONS_DIR
from addons.registry import Registry, folder_providers
from controller import addon_delivery, dashboard, docs, handlers, metrics, openapi
from controller.audit import AuditSink, AuditTrail
from controller.middleware import RequestContext
from controller.routes import (
    addons,
    admin,
    artifacts,
    audit,
    batches,
    chat,
    events,
    fleet,
    health,
    images,
    installs,
    jobs,
    webhooks,
)
from controller.scheduler import RetryScheduler
from controller.state import AppState, hash_key
from controller.submission import Submitter
from semantest import __version__, providers
from semantest.config import Settings, get_settings
from semantest.jobstore import JobStore
from semantest.redis_clients import async_client, sync_client
from semantest.storage import storage_from_settings


def create_app(settings: Settings | None = None, *, addons_dir: Path = ADDONS_DIR) -> FastAPI:
    """The controller app for `settings` (the environment's when omitted).

    `addons_dir` is the folder of addons it serves (ours by default; `semantest.testing`'s
    `addon_server` passes a project's own).
    """
    settings = settings or get_settings()
    providers.install(folder_providers(addons_dir))  # the API's provider enum, before any request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.redis_url is None:
            raise RuntimeError("SEMANTEST_REDIS_URL is not set (semantest up sets it for you)")
        settings.images_dir.mkdir(parents=True, exist_ok=True)
        redis = async_client(settings.redis_url, max_connections=512)
        redis_sync = sync_client(settings.redis_url)
        key_hashes = {}
        if settings.admin_key is not None:
            key_hashes[hash_key(settings.admin_key.get_secret_value())] = "admin"
        app.state.semantest = AppState(
            settings=settings,
            redis=redis,
            redis_sync=redis_sync,
            jobs=JobStore(redis),
            registry=Registry.load(addons_dir),
            storage=storage_from_settings(settings),
            submitter=Submitter(redis, settings),
            key_hashes=key_hashes,
        )
        app.state.audit = AuditSink(
            redis, settings.data_dir / "logs" / "audit.jsonl", settings.audit_retention_days
        )
        retries = RetryScheduler.for_controller(redis, redis_sync, settings)
        retries.start()
        try:
            yield
        finally:
            await retries.stop()
            app.state.audit.close()
            await redis.aclose()
            redis_sync.close()

    app = FastAPI(
        title="Semantest",
        version=__version__,
        summary="Chat-only image generators as an HTTP service.",
        lifespan=lifespan,
        # served by controller.docs from vendored files, never from a CDN
        docs_url=None,
        redoc_url=None,
    )
    api = APIRouter(prefix="/api/v1")
    routers = (images, batches, jobs, artifacts, chat, addons, installs, health, fleet, audit)
    for module in (*routers, admin, webhooks):
        api.include_router(module.router)
    api.include_router(events.router)  # live progress: SSE and the WebSocket
    app.include_router(api)
    app.include_router(metrics.router)  # /metrics and the scrape targets
    app.include_router(dashboard.router)  # /dashboard and the reads behind it
    handlers.install(app)
    docs.install(app)  # /docs, /redoc (offline) and the `/` redirect
    openapi.install(app)
    app.add_middleware(AuditTrail)  # inside RequestContext: it sees the request id
    app.add_middleware(RequestContext)
    app.add_middleware(metrics.HttpMetrics)  # outermost: times every answer, 413s included
    addon_delivery.install(app)  # in front of every middleware: public addon GETs, prebuilt
    return app
