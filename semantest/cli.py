"""The `semantest` command: run the local stack, the demo, agents, and the job API from a shell.

Help is click's plain layout (typer without rich markup): it wraps paragraphs, shows no type
labels on flags, and each command's help ends with the `SEMANTEST_*` variables it reads.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from semantest import __version__
from semantest.cli_addons import app as addons_app
from semantest.cli_jobs import register as register_job_commands
from semantest.cli_keys import app as keys_app
from semantest.cli_watch import watch
from semantest.config import Settings
from semantest.stack import DEFAULT_AGENTS, Stack, StackError, StackInUse

ABOUT = """Semantest turns image generators that only have a chat web page into a reliable HTTP
service. A controller takes jobs over a REST API and queues them in Redis; agents drive
Chromium with the Semantest extension, type each prompt into the provider's chat page and
store the images it makes. The sandbox provider, a local image chat, lets all of it run
offline.

Start with `semantest demo`, or run `semantest up` and open http://127.0.0.1:8000/docs.
Settings come from SEMANTEST_* environment variables (README, "Settings"); the help of each
command lists the ones it reads."""

app = typer.Typer(add_completion=False, no_args_is_help=True, help=ABOUT, rich_markup_mode=None)
console = Console(stderr=True)

#: What `up` and `demo` read; they pass every SEMANTEST_* setting on to the stack's processes.
STACK_ENV = """Environment: SEMANTEST_PORT (controller, default 8000), SEMANTEST_SANDBOX_PORT
(default 8001), SEMANTEST_HOST, SEMANTEST_DATA_DIR (logs, images, Redis files; default ./data),
SEMANTEST_REDIS_URL (unset: a redis-server of its own), SEMANTEST_ADMIN_KEY (unset: a new one
each run), SEMANTEST_SLOTS, SEMANTEST_SANDBOX_LATENCY_MS, and every other SEMANTEST_* setting,
passed on to the stack's processes."""


def _version(value: bool) -> None:
    if value:
        print(f"semantest {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Print the version with --version (the app's help is ABOUT)."""


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


Agents = Annotated[
    int,
    typer.Option(
        min=0, max=32, help="Agents to start, each one browser (0: none, jobs wait in the queue)."
    ),
]
Slots = Annotated[
    int | None,
    typer.Option(
        min=1, max=16, help="Tab slots per agent: jobs one agent runs at once (SEMANTEST_SLOTS)."
    ),
]


@app.command(
    help=f"""Run the whole stack in the foreground until Ctrl-C or SIGTERM.

It starts redis-server (unless SEMANTEST_REDIS_URL is set), the controller, the sandbox provider,
the webhook worker and N agents under the pool supervisor, then prints the controller's URL and
an admin key. Before starting anything it checks that its ports and data dir are free, so it
never mixes with another running stack. Each process appends to DATA_DIR/logs/NAME.log.

{STACK_ENV}""",
    short_help="Run the whole stack (Redis, controller, sandbox, agents) until Ctrl-C.",
)
def up(agents: Agents = DEFAULT_AGENTS, slots: Slots = None) -> None:
    stop = _on_signals(interrupt=False)
    stack = Stack(Settings(), agents=agents, slots=slots)
    try:
        stack.check_free()
        console.print(f"starting {agents} agent(s); logs in {stack.logs_dir}/")
        stack.start()
    except StackInUse as exc:
        console.print(f"[red]{exc}[/]", soft_wrap=True)
        stack.stop()
        raise typer.Exit(1) from None
    except StackError as exc:
        console.print(f"[red]could not start:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"[green]controller[/] {stack.url}  (API docs {stack.url}/docs)")
    console.print(f"[green]sandbox[/]    {stack.settings.sandbox_url}/chat")
    console.print(f"[green]admin key[/]  {stack.admin_key}")
    if agents == 0:
        console.print(
            "[yellow]no agents:[/] jobs you submit will wait in the queue (status queued) "
            "until agents join; start some with `semantest agents` (same SEMANTEST_REDIS_URL)."
        )
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


@app.command(
    help="""Run agents under the pool supervisor, for a controller that already runs.

Crashed agents are restarted, an agent is recycled after SEMANTEST_RECYCLE_AFTER_JOBS jobs or
when it uses more than SEMANTEST_RECYCLE_MEMORY_MB, and SIGTERM drains them: running jobs finish
or go back to the queue.

Environment: SEMANTEST_REDIS_URL (required: the controller's Redis), SEMANTEST_URL or
SEMANTEST_PORT (the controller, for addons), SEMANTEST_DATA_DIR (profiles, logs),
SEMANTEST_SLOTS, SEMANTEST_CHROMIUM, SEMANTEST_RECYCLE_AFTER_JOBS,
SEMANTEST_RECYCLE_MEMORY_MB, SEMANTEST_DRAIN_GRACE_S, SEMANTEST_JOB_TIMEOUT_S.""",
    short_help="Run agents (browsers) for a controller that already runs.",
)
def agents(
    count: Annotated[int, typer.Option(min=0, max=64, help="Agents to keep running.")] = (
        DEFAULT_AGENTS
    ),
    slots: Slots = None,
    prefix: Annotated[str, typer.Option(help="Agents are named PREFIX-1, PREFIX-2, ….")] = "agent",
) -> None:
    argv = [sys.executable, "-m", "agents.pool", "--count", str(count), "--prefix", prefix]
    if slots is not None:
        argv += ["--slots", str(slots)]
    os.execv(sys.executable, argv)  # noqa: S606 - becomes the pool; signals go straight to it


@app.command(
    help=f"""Generate a few images through the HTTP API and print where they are.

Without --url it starts its own stack (as `semantest up` does), submits the prompts, shows their
progress, checks each stored image against its sha256 and stops the stack. With --url it uses a
stack that already runs, with the key in SEMANTEST_API_KEY (else SEMANTEST_ADMIN_KEY), and
downloads each image to check it. Exit 0 when every image arrived intact.

{STACK_ENV} With --url: SEMANTEST_API_KEY, else SEMANTEST_ADMIN_KEY.""",
    short_help="Generate a few images end to end and print where they are.",
)
def demo(
    prompts: Annotated[
        list[str] | None, typer.Argument(help="Prompts to generate (default: three examples).")
    ] = None,
    agents: Annotated[
        int, typer.Option(min=1, max=8, help="Agents to start (not with --url).")
    ] = DEFAULT_AGENTS,
    url: Annotated[
        str | None,
        typer.Option(help="Use the stack that runs at this URL instead of starting one."),
    ] = None,
) -> None:
    from semantest.demo import run_demo, run_demo_against

    _on_signals(interrupt=True)
    try:
        if url is not None:
            key = os.environ.get("SEMANTEST_API_KEY") or os.environ.get("SEMANTEST_ADMIN_KEY")
            ok = run_demo_against(url, key, prompts or None, console)
        else:
            ok = run_demo(Settings(), agents, prompts or None, console)
    except KeyboardInterrupt:
        console.print("interrupted.")
        raise typer.Exit(130) from None
    raise typer.Exit(0 if ok else 1)


@app.command(
    help="""Show the agents and their tab slots as a live table, refreshed every second.

It reads GET /api/v1/fleet until Ctrl-C; --once prints one table and exits.

Environment: SEMANTEST_URL (default http://127.0.0.1:8000) and SEMANTEST_API_KEY, else
SEMANTEST_ADMIN_KEY.""",
    short_help="Show the agents and their tab slots as a live table.",
)
def fleet(
    once: Annotated[bool, typer.Option("--once", help="Print one table and exit.")] = False,
) -> None:
    from semantest.fleet_view import FleetViewError, connection_from_env, show_fleet

    url, key = connection_from_env()
    try:
        show_fleet(url, key, once=once, console=Console())
    except FleetViewError as exc:
        console.print(f"[red]semantest fleet:[/] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command(
    "login-desk",
    help="""Open a browser profile so that a person can log it in to a provider.

The profile is an agent's (DATA_DIR/profiles/ID) or any profile folder; agents that use it
afterwards are logged in (docs/profiles.md). Ctrl-C closes the browser cleanly.

Environment: SEMANTEST_DATA_DIR (where agent profiles live) and SEMANTEST_CHROMIUM.""",
    short_help="Open a browser profile so that a person can log it in to a provider.",
)
def login_desk(
    profile: Annotated[
        str, typer.Argument(help="An agent id (DATA_DIR/profiles/ID) or a profile's path.")
    ],
    url: Annotated[str | None, typer.Option(help="The page to open first.")] = None,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="The desk page's port (0: any free one).")
    ] = 0,
    headless: Annotated[
        bool, typer.Option("--headless", help="Run the browser headless and serve a desk page.")
    ] = False,
) -> None:
    # A child process (the kernel does not import browser_profiles) that gets our signals.
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
app.command(short_help="Print a job's or a batch's events as they happen, until it is final.")(
    watch
)  # semantest/cli_watch.py
# keys create | list | revoke (semantest/cli_keys.py)
app.add_typer(keys_app, name="keys")
# addons list | publish DIR | promote | rollback (semantest/cli_addons.py)
app.add_typer(addons_app, name="addons")

if __name__ == "__main__":
    app()
