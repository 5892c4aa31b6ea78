"""The `semantest` command (typer + rich): run the local stack, run the demo."""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from semantest.cli_jobs import register as register_job_commands
from semantest.cli_keys import app as keys_app
from semantest.cli_watch import watch
from semantest.config import Settings
from semantest.stack import Stack, StackError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


def _on_signals(*, interrupt: bool) -> list[int]:
    """Record SIGINT/SIGTERM in the returned list; with `interrupt`, the first one also raises
    KeyboardInterrupt so `finally` blocks stop the stack.

    The handler takes no lock (a `threading.Event` here deadlocks when a second signal lands
    while the first handler holds the event's lock) and later signals never interrupt the
    shutdown that the first one started.
    """
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        first = not received
        received.append(signum)
        if interrupt and first:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return received


@app.command()
def up(
    agents: Annotated[int, typer.Option(min=0, max=32, help="number of agents")] = 1,
    slots: Annotated[
        int | None, typer.Option(min=1, max=16, help="tab slots per agent [SEMANTEST_SLOTS]")
    ] = None,
) -> None:
    """Run redis-server (unless SEMANTEST_REDIS_URL is set), the controller, the sandbox
    provider and N agents (under the pool supervisor) in the foreground until Ctrl-C or SIGTERM."""
    stop = _on_signals(interrupt=False)
    stack = Stack(Settings(), agents=agents, slots=slots)
    console.print(f"starting {agents} agent(s); logs in {stack.logs_dir}/")
    try:
        stack.start()
    except StackError as exc:
        console.print(f"[red]could not start:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"[green]controller[/] {stack.url}  (API docs {stack.url}/docs)")
    console.print(f"[green]sandbox[/]    {stack.settings.sandbox_url}/chat")
    console.print(f"[green]admin key[/]  {stack.admin_key}")
    console.print("Ctrl-C stops everything.")
    try:
        while not stop:
            time.sleep(0.2)
            for child in stack.children:
                if child.proc.poll() is not None:
                    console.print(f"[red]{child.name} exited ({child.proc.returncode})[/]")
                    stop.append(0)
    finally:
        console.print("stopping…")
        stack.stop()
        console.print("stopped.")


@app.command()
def agents(
    count: Annotated[int, typer.Option(min=0, max=64, help="agents to keep running")] = 1,
    slots: Annotated[
        int | None, typer.Option(min=1, max=16, help="tab slots per agent [SEMANTEST_SLOTS]")
    ] = None,
    prefix: Annotated[str, typer.Option(help="agents are named <prefix>-<n>")] = "agent",
) -> None:
    """Run the pool supervisor: N agents, restarted when they crash, recycled after
    SEMANTEST_RECYCLE_AFTER_JOBS jobs or SEMANTEST_RECYCLE_MEMORY_MB, drained on SIGTERM.
    Needs SEMANTEST_REDIS_URL and a running controller (for addons and retries)."""
    argv = [sys.executable, "-m", "agents.pool", "--count", str(count), "--prefix", prefix]
    if slots is not None:
        argv += ["--slots", str(slots)]
    os.execv(sys.executable, argv)  # noqa: S606 - becomes the pool; signals go straight to it


@app.command()
def demo(
    agents: Annotated[int, typer.Option(min=1, max=8, help="number of agents")] = 2,
    prompts: Annotated[list[str] | None, typer.Argument(help="prompts to generate")] = None,
) -> None:
    """Start the stack, generate a few images through the HTTP API, print where they are."""
    from semantest.demo import run_demo

    _on_signals(interrupt=True)
    try:
        ok = run_demo(Settings(), agents, prompts or None, console)
    except KeyboardInterrupt:
        console.print("interrupted.")
        raise typer.Exit(130) from None
    raise typer.Exit(0 if ok else 1)


@app.command()
def fleet(
    once: Annotated[bool, typer.Option("--once", help="print one table and exit")] = False,
) -> None:
    """Live table of the agents and their slots, from GET /api/v1/fleet on SEMANTEST_URL
    (key: SEMANTEST_API_KEY, else SEMANTEST_ADMIN_KEY); refreshes every second until Ctrl-C."""
    from semantest.fleet_view import FleetViewError, connection_from_env, show_fleet

    url, key = connection_from_env()
    try:
        show_fleet(url, key, once=once, console=Console())
    except FleetViewError as exc:
        console.print(f"[red]semantest fleet:[/] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command("login-desk")
def login_desk(
    profile: Annotated[str, typer.Argument(help="agent id (data/profiles/ID) or a profile path")],
    url: Annotated[str | None, typer.Option(help="page to open first")] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="desk port (0: free)")] = 0,
    headless: Annotated[bool, typer.Option("--headless", help="desk page with DISPLAY")] = False,
) -> None:
    """Open a browser profile so a person can log it in to a provider (docs/profiles.md).

    Runs `python -m browser_profiles login-desk` as a child (the kernel does not import
    browser_profiles) and passes Ctrl-C/SIGTERM on, so the browser closes cleanly."""
    import subprocess

    argv = [sys.executable, "-m", "browser_profiles", "login-desk", profile, "--port", str(port)]
    argv += ["--url", url] if url else []
    argv += ["--headless"] if headless else []
    child = subprocess.Popen(argv)

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)  # Ctrl-C reaches the child too; a second one is harmless

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    raise typer.Exit(child.wait())


# submit, batch, status, wait, cancel (semantest/cli_jobs.py)
register_job_commands(app)
app.command()(watch)  # semantest/cli_watch.py
# keys create | list | revoke (semantest/cli_keys.py)
app.add_typer(keys_app, name="keys")

if __name__ == "__main__":
    app()
