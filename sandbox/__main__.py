"""Command line entry: ``python -m sandbox [--host 127.0.0.1] [--port 8001]``.

Runs the sandbox provider under uvicorn with quiet logging, for demos and manual checks. Log
lines are JSON on stdout like every Semantest process's (python-json-logger; the sandbox imports
nothing of ours, so it configures its own).
"""

from __future__ import annotations

import argparse

import uvicorn

from sandbox.app import create_app

#: uvicorn's logging as JSON lines on stdout, with the sandbox's role.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "static_fields": {"role": "sandbox"},
        }
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        }
    },
    "root": {"handlers": ["stdout"], "level": "INFO"},
    "loggers": {"uvicorn": {"level": "WARNING"}, "uvicorn.error": {"level": "INFO"}},
}


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve the sandbox app until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="TCP port (8001)")
    args = parser.parse_args(argv)
    # Build the app first so a bad SEMANTEST_SANDBOX_LATENCY_MS fails before binding.
    try:
        app = create_app()
    except ValueError as exc:
        parser.error(str(exc))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        log_config=LOG_CONFIG,
    )


if __name__ == "__main__":
    main()
