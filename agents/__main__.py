"""`python -m agents [--name NAME] [--slots K] [--provider P]`: run one agent in the foreground.

Most people run agents through the pool supervisor instead (`semantest agents --count N`),
which restarts and recycles them.
"""

from __future__ import annotations

import argparse
import sys

# Playwright's driver starts first and boots while the rest is imported (agents/early.py).
from agents.early import AgentLoop

EARLY = AgentLoop() if __name__ == "__main__" else None

from agents.worker import run_agent  # noqa: E402
from semantest.config import get_settings  # noqa: E402
from semantest.logs import bind, configure_logging  # noqa: E402


def main() -> None:
    """Parse arguments and run the agent until SIGTERM/SIGINT; exit with its code."""
    parser = argparse.ArgumentParser(prog="python -m agents", description=__doc__)
    parser.add_argument(
        "--name", help="agent id, which also names its browser profile (default: host name)"
    )
    parser.add_argument("--slots", type=int, help="tab slots (default: SEMANTEST_SLOTS)")
    parser.add_argument("--provider", default="sandbox", help="provider whose queues to serve")
    args = parser.parse_args()
    settings = get_settings()
    if args.slots is not None:
        if not 1 <= args.slots <= 16:
            parser.error("--slots must be between 1 and 16")
        settings = settings.model_copy(update={"slots": args.slots})
    configure_logging(settings.log_level, "agent", settings.log_format)
    bind(agent=args.name)  # run_agent binds the host name when there is no --name
    sys.exit(run_agent(settings, name=args.name, provider=args.provider, early=EARLY))


if __name__ == "__main__":
    main()
