"""The `semantest` command (typer + rich): run the local stack, run the demo."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from semantest.config import Settings
from semantest.stack import Stack, StackError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (so both stop the stack the same way)."""
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@app.command()
def up(
    agents: Annotated[int, typer.Option(min=0, max=32, help="number of agents")] = 1,
) -> None:
    """Run redis-server (unless SEMANTEST_REDIS_URL is set), the controller, the sandbox
    provider and N agents in the foreground until Ctrl-C or SIGTERM."""
    stop = _stop_on_signals()
    stack = Stack(Settings(), agents=agents)
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
        while not stop.wait(0.5):
            for child in stack.children:
                if child.proc.poll() is not None:
                    console.print(f"[red]{child.name} exited ({child.proc.returncode})[/]")
                    stop.set()
    finally:
        console.print("stopping…")
        stack.stop()
        console.print("stopped.")


@app.command()
def demo(
    agents: Annotated[int, typer.Option(min=1, max=8, help="number of agents")] = 2,
    prompts: Annotated[list[str] | None, typer.Argument(help="prompts to generate")] = None,
) -> None:
    """Start the stack, generate a few images through the HTTP API, print where they are."""
    from semantest.demo import run_demo

    _stop_on_signals()
    ok = run_demo(Settings(), agents, prompts or None, console)
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    app()
