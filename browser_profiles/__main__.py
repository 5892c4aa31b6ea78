"""`python -m browser_profiles login-desk PROFILE [--url URL] [--port N] [--headless]`.

See `browser_profiles.login_desk` for what the desk does; `semantest login-desk` runs this.
"""

from __future__ import annotations

import argparse
import sys

from browser_profiles.profiles import ProfileLocked
from browser_profiles.templates import TemplateError


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m browser_profiles")
    commands = parser.add_subparsers(dest="command", required=True)
    desk = commands.add_parser(
        "login-desk", help="open a profile in Chromium to log it in to a provider by hand"
    )
    desk.add_argument("profile", metavar="PROFILE", help="agent id (data/profiles/ID) or a path")
    desk.add_argument("--url", help="page to open first (e.g. the provider's login page)")
    desk.add_argument("--port", type=int, default=0, help="desk port when headless (free port)")
    desk.add_argument(
        "--headless", action="store_true", help="headless plus the desk page even with DISPLAY"
    )
    args = parser.parse_args(argv)

    from browser_profiles.login_desk import main_login_desk

    try:
        return main_login_desk(args.profile, args.url, args.port, args.headless)
    except (ProfileLocked, TemplateError) as exc:
        print(f"login-desk: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
