"""`python -m controller`: serve the controller on SEMANTEST_HOST:SEMANTEST_PORT with granian.

`SEMANTEST_CONTROLLER_WORKERS` worker processes (default 2) share the one port, each building
its own app from the environment (`worker_app`). Why granian rather than uvicorn, and why two
workers on two cores: docs/performance.md (measured with bench/submit.py). In short: the
Python app, not the HTTP server, is what costs, so one process tops out at one core; and
granian accepts new connections in its Rust runtime, where uvicorn on uvloop accepts one
connection per event-loop turn and leaves clients waiting seconds in the listen queue while
the loop is busy.
"""

from __future__ import annotations

import os
import shutil

from semantest.config import get_settings


def use_metrics_dir() -> None:
    """Give the workers one fresh directory for prometheus-client's multiprocess mode.

    prometheus-client picks its mode when it is imported, so this runs before the app (and
    with it prometheus-client) is imported; the workers inherit the variable. One directory per
    port (two controllers never share a port), emptied first as prometheus-client requires. An
    operator's own PROMETHEUS_MULTIPROC_DIR is kept (and must be emptied by them).
    """
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    settings = get_settings()
    path = settings.data_dir / "metrics" / f"controller-{settings.port}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


if __name__ == "__main__":
    use_metrics_dir()

from fastapi import FastAPI  # noqa: E402
from granian import Granian  # noqa: E402
from granian.constants import Interfaces, Loops  # noqa: E402
from granian.log import LogLevels  # noqa: E402

from controller.app import create_app  # noqa: E402
from semantest import tracing  # noqa: E402
from semantest.logs import configure_logging  # noqa: E402
from semantest.stack import die_with_parent  # noqa: E402

#: granian's loggers (its server and its access log).
GRANIAN_LOGGERS = ("_granian", "granian.access")
#: Connections waiting to be accepted (the kernel caps it at net.core.somaxconn).
BACKLOG = 4096


def worker_app() -> FastAPI:
    """The app of one worker process (granian's factory, run in each worker)."""
    # Workers are children of granian's main process, not of whoever started us: tie them to
    # it, so that even a SIGKILLed controller leaves no worker behind holding the port.
    die_with_parent()
    settings = get_settings()
    configure_logging(settings.log_level, "controller", settings.log_format)
    tracing.setup(settings, "semantest-controller")
    return create_app(settings)


def main() -> None:
    """Run until SIGINT/SIGTERM (granian stops its workers gracefully)."""
    settings = get_settings()
    configure_logging(settings.log_level, "controller", settings.log_format)
    Granian(
        "controller.__main__:worker_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.controller_workers,
        loop=Loops.uvloop,
        backlog=BACKLOG,
        respawn_failed_workers=True,
        log_level=LogLevels.warning,
        # granian's own lines go through our handler too: JSON like every other line
        log_dictconfig={
            "loggers": {name: {"handlers": [], "propagate": True} for name in GRANIAN_LOGGERS}
        },
    ).serve()


if __name__ == "__main__":
    main()
