"""`semantest demo`: the whole path once, as a new user sees it.

Starts the stack, submits prompts over HTTP like any client, shows their progress from the
status endpoint, then prints each stored image's path and checks its bytes against the sha256
the job record holds. With `--url` it uses a stack that already runs instead: it downloads each
image from its URL and checks the downloaded bytes, and prints the URLs.
"""

from __future__ import annotations

import hashlib
import time

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from semantest.config import Settings
from semantest.models import JobRecord
from semantest.stack import Stack, StackError, StackInUse
from semantest.storage import LocalStorage

DEFAULT_PROMPTS = [
    "a lighthouse on a cliff at dawn, watercolour",
    "a red fox reading a newspaper in a cafe",
    "isometric city block made of candy",
]


def run_demo(settings: Settings, agents: int, prompts: list[str] | None, console: Console) -> bool:
    """Run the demo; True when every image was generated and stored intact."""
    prompts = prompts or DEFAULT_PROMPTS
    stack = Stack(settings, agents=agents)
    try:
        stack.check_free()
    except StackInUse as exc:
        console.print(
            f"[red]{exc}[/] (or run the demo against it: semantest demo --url URL)",
            soft_wrap=True,
        )
        return False
    console.print(f"starting redis, controller, sandbox and {agents} agents…")
    started = time.perf_counter()
    try:
        stack.start()
    except StackInUse as exc:
        console.print(
            f"[red]{exc}[/] (or run the demo against it: semantest demo --url URL)",
            soft_wrap=True,
        )
        return False
    except StackError as exc:
        console.print(f"[red]could not start the stack:[/] {exc}")
        return False
    try:
        console.print(f"stack up in {time.perf_counter() - started:.1f} s at {stack.url}")
        with httpx.Client(
            base_url=stack.url, headers={"Authorization": f"Bearer {stack.admin_key}"}, timeout=10
        ) as client:
            records = _submit_and_watch(client, prompts, console)
        return _report(records, LocalStorage(stack.settings.images_dir), console)
    finally:
        console.print("shutting down…")
        stack.stop()
        console.print("stopped cleanly.")


def run_demo_against(
    url: str, api_key: str | None, prompts: list[str] | None, console: Console
) -> bool:
    """Run the demo against a stack that already runs at `url`; True when every image came back
    intact (downloaded bytes match the record's sha256)."""
    if not api_key:
        console.print(
            "[red]set SEMANTEST_API_KEY[/] to a key of the stack at "
            f"{url} (semantest up prints its admin key)"
        )
        return False
    prompts = prompts or DEFAULT_PROMPTS
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=10) as client:
        try:
            client.get("/api/v1/health").raise_for_status()
        except httpx.HTTPError as exc:
            console.print(f"[red]no controller answers at {url}:[/] {exc}")
            return False
        console.print(f"using the stack at {url}")
        try:
            records = _submit_and_watch(client, prompts, console)
        except httpx.HTTPStatusError as exc:
            console.print(f"[red]{exc.response.status_code}:[/] {exc.response.text}")
            return False
        return _report_downloaded(records, client, console)


def _report_downloaded(
    records: list[tuple[str, JobRecord | None]], client: httpx.Client, console: Console
) -> bool:
    ok = True
    for job_id, record in records:
        if record is None or record.status.value != "succeeded":
            ok = False
            why = "did not finish in time" if record is None else f"{record.status.value}: "
            console.print(f"[red]job {job_id} {why}[/]{record.error if record else ''}")
            continue
        for image in record.images:
            data = client.get(image.url or f"/api/v1/images/{image.key}").content
            intact = hashlib.sha256(data).hexdigest() == image.sha256
            ok &= intact
            mark = "[green]ok[/]" if intact else "[red]sha256 mismatch[/]"
            console.print(
                f"{mark} {record.prompt!r} ({image.width}x{image.height}, {image.bytes} B)"
            )
            print(image.url, flush=True)  # stdout carries just the URLs, for scripts
    return ok


def _submit_and_watch(
    client: httpx.Client, prompts: list[str], console: Console
) -> list[tuple[str, JobRecord | None]]:
    jobs = []
    for prompt in prompts:
        reply = client.post(
            "/api/v1/images/generate", json={"prompt": prompt, "provider": "sandbox"}
        )
        reply.raise_for_status()
        jobs.append((prompt, reply.json()["jobId"]))
    records: dict[str, JobRecord] = {}
    columns = (
        TextColumn("{task.description:<48}"),
        BarColumn(),
        TextColumn("{task.fields[state]}"),
    )
    with Progress(*columns, console=console) as progress:
        tasks = {
            job_id: progress.add_task(prompt[:48], total=100, state="queued")
            for prompt, job_id in jobs
        }
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(records) < len(jobs):
            for _prompt, job_id in jobs:
                if job_id in records:
                    continue
                reply = client.get(f"/api/v1/images/status/{job_id}")
                record = JobRecord.model_validate_json(reply.raise_for_status().content)
                state = f"{record.status.value} · {record.stage.value}"
                progress.update(tasks[job_id], completed=record.progress, state=state)
                if record.status.terminal:
                    records[job_id] = record
            time.sleep(0.1)
    return [(job_id, records.get(job_id)) for _prompt, job_id in jobs]


def _report(
    records: list[tuple[str, JobRecord | None]], storage: LocalStorage, console: Console
) -> bool:
    ok = True
    for job_id, record in records:
        if record is None or record.status.value != "succeeded":
            ok = False
            why = "did not finish in time" if record is None else f"{record.status.value}: "
            console.print(f"[red]job {job_id} {why}[/]{record.error if record else ''}")
            continue
        for image in record.images:
            path = storage.path_for(image.key)
            intact = hashlib.sha256(path.read_bytes()).hexdigest() == image.sha256
            ok &= intact
            mark = "[green]ok[/]" if intact else "[red]sha256 mismatch[/]"
            console.print(
                f"{mark} {record.prompt!r} ({image.width}x{image.height}, {image.bytes} B)"
            )
            print(path.resolve(), flush=True)  # stdout carries just the paths, for scripts
    return ok
