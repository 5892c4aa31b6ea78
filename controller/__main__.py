"""`python -m controller`: serve the controller with uvicorn on SEMANTEST_HOST:SEMANTEST_PORT."""

from __future__ import annotations

import uvicorn

from controller.app import create_app
from semantest.config import get_settings
from semantest.logs import configure_logging


def main() -> None:
    """Run until SIGINT/SIGTERM."""
    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
