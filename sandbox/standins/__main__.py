"""`python -m sandbox.standins --port 8002 --openai-key K --stability-key K`: the stand-ins."""

from __future__ import annotations

import argparse

import uvicorn

from sandbox.__main__ import LOG_CONFIG
from sandbox.standins.app import create_app


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve both stand-ins until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.standins", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--openai-key", action="append", default=[], help="an accepted key")
    parser.add_argument("--stability-key", action="append", default=[], help="an accepted key")
    args = parser.parse_args(argv)
    app = create_app({"openai": set(args.openai_key), "stability": set(args.stability_key)})
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", log_config=LOG_CONFIG)


if __name__ == "__main__":
    main()
