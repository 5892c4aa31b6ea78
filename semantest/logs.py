"""Logging set-up shared by every process: one line per record, with the process's role."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO", role: str = "semantest") -> None:
    """Log to stderr as `time level role logger: message`."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {role} %(name)s: %(message)s",
        force=True,
    )
