"""`python -m agents [--name NAME] [--provider sandbox]`: run one agent in the foreground."""

from __future__ import annotations

import argparse

from agents.worker import run_agent
from semantest.config import get_settings
from semantest.logs import configure_logging


def main() -> None:
    """Parse arguments and run the agent until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m agents", description=__doc__)
    parser.add_argument("--name", help="agent id (default: host-pid)")
    parser.add_argument("--provider", default="sandbox", help="provider whose queues to serve")
    args = parser.parse_args()
    settings = get_settings()
    configure_logging(settings.log_level, role=f"agent[{args.name or '-'}]")
    run_agent(settings, name=args.name, provider=args.provider)


if __name__ == "__main__":
    main()
