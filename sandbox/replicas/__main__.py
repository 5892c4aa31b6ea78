"""`python -m sandbox.replicas [--port 8443]`: serve the replicas and print the proxy to use."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sandbox.replicas.app import HOSTS, serve


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.replicas", description=__doc__)
    parser.add_argument("--port", type=int, default=8443, help="the replicas' HTTPS port")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp), args.port) as running:
        print(f"replicas of {', '.join(HOSTS)} on https://127.0.0.1:{args.port}")
        print(f"SEMANTEST_BROWSER_PROXY={running.proxy.url}")
        print("SEMANTEST_BROWSER_IGNORE_HTTPS_ERRORS=true")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
