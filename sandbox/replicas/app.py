"""The replica server: every replica's hosts on one HTTPS port (routed by `Host`), and the
control routes `/_replica/<name>/faults` (any host) tests use; `serve()` runs it with the proxy."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from starlette.routing import Host

from sandbox.replicas import chatgpt, gemini
from sandbox.replicas.net import Proxy, make_certificate
from sandbox.replicas.state import FaultIn, Replica


class VariantIn(BaseModel):
    """Body of `PUT /_replica/<name>/variant`: the markup pages load from now on."""

    variant: Literal["current", "legacy"]


REPLICAS: dict[str, Replica] = {"chatgpt": chatgpt.REPLICA, "gemini": gemini.REPLICA}
HOSTS = [h for r in REPLICAS.values() for h in (r.page_host, r.image_host)]


def create_app() -> FastAPI:
    """Control routes first, then one sub-app per host name."""
    app = FastAPI(title="Semantest provider replicas", docs_url=None, redoc_url=None)

    def replica(name: str) -> Replica:
        if name not in REPLICAS:
            raise HTTPException(404, f"no replica {name!r} ({', '.join(REPLICAS)})")
        return REPLICAS[name]

    @app.post("/_replica/{name}/faults")
    async def add_fault(name: str, fault: FaultIn) -> dict[str, int]:
        found = replica(name)
        found.faults.append(fault)
        return {"pending": sum(f.count for f in found.faults)}

    @app.delete("/_replica/{name}/faults")
    async def clear(name: str) -> dict[str, int]:
        replica(name).clear()
        return {"pending": 0}

    @app.put("/_replica/{name}/variant")
    async def variant(name: str, body: VariantIn) -> dict[str, str]:
        replica(name).variant = body.variant
        return {"variant": body.variant}

    @app.get("/_replica/{name}/pages")
    async def pages(name: str) -> list[str]:
        return replica(name).pages

    @app.get("/_replica/{name}/prompts")
    async def prompts(name: str) -> list[str]:
        return replica(name).prompts

    for module in (chatgpt, gemini):
        app.router.routes.append(Host(module.REPLICA.page_host, module.page_app()))
        app.router.routes.append(Host(module.REPLICA.image_host, module.image_app()))
    return app


@dataclass
class Running:
    """A running replica server and its proxy."""

    port: int
    proxy: Proxy

    @property
    def control_url(self) -> str:
        """Where the control routes answer (HTTPS, the test certificate)."""
        return f"https://127.0.0.1:{self.port}"


@contextlib.contextmanager
def serve(folder: Path, port: int) -> Iterator[Running]:
    """The replicas on `port` (HTTPS, a fresh test certificate in `folder`) and their proxy."""
    cert, key = make_certificate(HOSTS, folder)
    config = uvicorn.Config(
        create_app(),
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the replica server did not start")
        time.sleep(0.01)
    proxy = Proxy(HOSTS, port)
    try:
        yield Running(port, proxy)
    finally:
        proxy.close()
        server.should_exit = True
        thread.join(10)
