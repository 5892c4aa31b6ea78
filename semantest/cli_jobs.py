"""`semantest submit | batch | status | wait | cancel`: the job API from a shell, over the SDK.

Results go to stdout, progress bars and messages to stderr. `--json` prints exactly one JSON
document on stdout (camelCase, as the API answers) for scripts. The controller and key come
from `--url`/`--api-key`, else `SEMANTEST_URL` (default http://127.0.0.1:8000) and
`SEMANTEST_API_KEY` (else `SEMANTEST_ADMIN_KEY`).

Exit codes: 0 every job succeeded (or the command did what it was asked), 1 a job failed or
was canceled, 2 bad usage, 3 the controller refused the request or could not be reached (the
message says why, never a traceback), 124 `--timeout` ran out, 130 interrupted.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from semantest.client import Client
from semantest.client_calls import DEFAULT_URL, WaitTimeout
from semantest.client_replies import ApiError, ConnectionFailed
from semantest.errors import (
    JobNotFound,
    NotFound,
    RateLimited,
    SemantestError,
    Unauthorized,
    Unavailable,
)
from semantest.models import BatchSummary, JobRecord, JobStatus, Priority

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_INTERRUPTED = (
    0,
    1,
    2,
    3,
    124,
    130,
)

err = Console(stderr=True, highlight=False)

Url = Annotated[
    str,
    typer.Option("--url", envvar="SEMANTEST_URL", help="The controller's URL.", show_envvar=True),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar=["SEMANTEST_API_KEY", "SEMANTEST_ADMIN_KEY"],
        help="The API key to send.",
        show_default=False,
        show_envvar=True,
    ),
]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON document, as the API answers (scripts).")
]
Timeout = Annotated[
    float, typer.Option(min=0.1, help="Seconds to wait before giving up (exit 124).")
]
Provider = Annotated[str, typer.Option(help="The provider (addon) to run on.")]
Lane = Annotated[Priority, typer.Option(help="The queue lane.")]
Size = Annotated[str | None, typer.Option(help='Image size WxH, e.g. 256x256 (README, "Options").')]
Count = Annotated[int | None, typer.Option(help="Images per prompt, 1 to 4.")]
Style = Annotated[str | None, typer.Option(help="A style hint, for providers that take one.")]
Model = Annotated[str | None, typer.Option(help="A provider model, for providers that have one.")]
Cache = Annotated[bool, typer.Option("--cache", help="Answer from the result cache when it can.")]
IdempotencyKey = Annotated[
    str | None,
    typer.Option(help="A repeated submit with the same key returns the first job or batch."),
]

#: The last paragraph of every job command's help.
CLIENT_ENV = """Environment: SEMANTEST_URL (the controller, default http://127.0.0.1:8000) and
SEMANTEST_API_KEY, else SEMANTEST_ADMIN_KEY, when --url and --api-key are not given."""


CommandFunction = TypeVar("CommandFunction", bound=Callable[..., None])


def client_command(
    app: typer.Typer, name: str | None = None
) -> Callable[[CommandFunction], CommandFunction]:
    """`app.command` for a command that calls the API: its help ends with what it reads."""

    def add(function: CommandFunction) -> CommandFunction:
        doc = inspect.cleandoc(function.__doc__ or "")
        help_text = f"{doc}\n\n{CLIENT_ENV}"
        app.command(name, help=help_text, short_help=doc.split("\n\n")[0])(function)
        return function

    return add


def register(app: typer.Typer) -> None:
    """Add the job commands to the `semantest` app, each help ending with what it reads."""
    for command in (submit, batch, status, wait, cancel):
        client_command(app)(command)


def submit(
    prompt: Annotated[str, typer.Argument(help="What to generate.")],
    provider: Provider = "sandbox",
    size: Size = None,
    count: Count = None,
    style: Style = None,
    model: Model = None,
    cache: Cache = False,
    priority: Lane = Priority.NORMAL,
    idempotency_key: IdempotencyKey = None,
    wait_: Annotated[
        bool, typer.Option("--wait", help="Wait for the result, with a progress bar.")
    ] = False,
    timeout: Timeout = 3600,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Queue one prompt for a provider.

    It prints the new job's id, or with --wait the finished job (exit 1 if it failed)."""
    options = _options(size, count, style, model, cache)
    with _client(url, api_key) as client:
        accepted = client.generate(
            prompt,
            provider=provider,
            options=options,
            priority=priority,
            idempotency_key=idempotency_key,
        )
        if not wait_:
            _emit(accepted.model_dump(mode="json", by_alias=True), as_json, accepted.job_id)
            return
        record = _wait_showing(client, accepted.job_id, timeout)
    raise typer.Exit(_show_final(record, as_json))


def batch(
    file: Annotated[Path, typer.Argument(help="Prompts, one a line ('-' reads standard input).")],
    provider: Provider = "sandbox",
    size: Size = None,
    count: Count = None,
    style: Style = None,
    model: Model = None,
    cache: Cache = False,
    priority: Lane = Priority.NORMAL,
    idempotency_key: IdempotencyKey = None,
    wait_: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for every job, with a progress bar.")
    ] = True,
    timeout: Timeout = 3600,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Queue the prompts of a file as one batch and wait for it.

    FILE holds 1 to 100 prompts, one a line (blank lines are skipped). With --json it prints
    the batch and its final job records; exit 1 if a job failed."""
    prompts = _read_prompts(file)
    options = _options(size, count, style, model, cache)
    with _client(url, api_key) as client:
        accepted = client.batch(
            prompts,
            provider=provider,
            options=options,
            priority=priority,
            idempotency_key=idempotency_key,
        )
        err.print(f"batch {accepted.batch_id}: {len(accepted.job_ids)} job(s) queued")
        if not wait_:
            _emit(accepted.model_dump(mode="json", by_alias=True), as_json, accepted.batch_id)
            return
        summary = _wait_showing(client, accepted.batch_id, timeout, batch=True)
    raise typer.Exit(_show_final(summary, as_json))


def status(
    ident: Annotated[str, typer.Argument(metavar="ID", help="A job id or a batch id.")],
    as_json: AsJson = False,
    artifacts: Annotated[
        bool,
        typer.Option(
            "--artifacts",
            help="Also download the job's failure evidence (each failed attempt's screenshot, "
            "DOM, console log and addon state) into --out/<jobId>/<attempt>/.",
        ),
    ] = False,
    out: Annotated[
        Path, typer.Option(help="Where --artifacts puts the files.", file_okay=False)
    ] = Path("."),
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Show a job or a batch as it is now.

    A job shows its status, progress, images and error; a batch its counts and its jobs. With
    --artifacts, a job's failure evidence is downloaded too."""
    with _client(url, api_key) as client:
        current = _job_or_batch(ident, client.status, client.batch_status)
        saved = _save_artifacts(client, ident, out) if artifacts else []
    _show(current, as_json)
    for path in saved:  # on stderr: stdout stays the record (JSON with --json)
        err.print(f"saved {escape(str(path))}")
    if artifacts and not saved:
        err.print("no artifacts: no attempt of this job failed, or they are past retention")


def _save_artifacts(client: Client, job_id: str, out: Path) -> list[Path]:
    """Download every artifact of the job into `out/<jobId>/<attempt>/<file>`."""
    saved = []
    for artifact in client.artifacts(job_id):
        path = out / job_id / str(int(artifact["attempt"])) / Path(artifact["file"]).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.download_artifact(artifact["url"]))
        saved.append(path)
    return saved


def wait(
    ident: Annotated[str, typer.Argument(metavar="ID", help="A job id or a batch id.")],
    timeout: Timeout = 3600,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Wait for a job or a batch to finish, with a progress bar.

    It prints the final job or batch; exit 1 if a job failed or was canceled."""
    with _client(url, api_key) as client:
        final = _wait_showing(client, ident, timeout)
    raise typer.Exit(_show_final(final, as_json))


def cancel(
    ident: Annotated[str, typer.Argument(metavar="ID", help="A job id or a batch id.")],
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Cancel a queued or running job, or every unfinished job of a batch.

    A finished job cannot be canceled: the controller answers 409 CONFLICT (exit 3)."""
    with _client(url, api_key) as client:
        current = _job_or_batch(ident, client.cancel, client.cancel_batch)
    _show(current, as_json)


# --- talking to the controller ---------------------------------------------------------------


@contextmanager
def _client(url: str, api_key: str | None) -> Iterator[Client]:
    """A `semantest.Client`; any error it raises ends the command with a message, no
    traceback."""
    try:
        with Client(url, api_key) as client:
            yield client
    except SemantestError as exc:
        _explain(exc, url)
        raise typer.Exit(EXIT_REFUSED) from None
    except WaitTimeout as exc:
        err.print(f"[yellow]gave up waiting:[/] {escape(str(exc))}")
        _show(exc.last, as_json=False, out=err)
        raise typer.Exit(EXIT_TIMEOUT) from None
    except KeyboardInterrupt:
        err.print("interrupted; the jobs keep running (see `semantest status ID`).")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _explain(exc: SemantestError, url: str) -> None:
    if isinstance(exc, ConnectionFailed):
        err.print(
            f"[red]cannot reach the controller at {escape(url)}[/]: is it running "
            "(`semantest up`)? Point --url or SEMANTEST_URL at it."
        )
        return
    code = exc.error_code if isinstance(exc, ApiError) else exc.code
    err.print(f"[red]{code}[/]: {escape(exc.message)}")
    for detail in exc.details:
        field, reason = detail.get("field"), detail.get("reason")
        line = f"{field}: {reason}" if field else json.dumps(detail)
        err.print(f"  {escape(line)}")
    if isinstance(exc, Unauthorized):
        err.print("  pass --api-key or set SEMANTEST_API_KEY (`semantest up` prints a key)")
    elif isinstance(exc, RateLimited | Unavailable):
        err.print(f"  still refused after retrying; try again in {exc.retry_after_s} s")
    for note in getattr(exc, "__notes__", []):
        err.print(f"  [dim]{escape(note)}[/]")


def _job_or_batch(
    ident: str, job: Callable[[str], JobRecord], batch: Callable[[str], BatchSummary]
) -> JobRecord | BatchSummary:
    """`job(ident)`, else `batch(ident)` when no job has that id; `JobNotFound` (reported by
    `_client`) when neither has it."""
    try:
        return job(ident)
    except NotFound:
        pass
    try:
        return batch(ident)
    except NotFound:
        raise JobNotFound(f"no job or batch {ident!r}") from None


def _options(
    size: str | None, count: int | None, style: str | None, model: str | None, cache: bool
) -> dict[str, Any] | None:
    """The options given on the command line; the controller validates them (its 422 names
    the field)."""
    given: dict[str, Any] = {"size": size, "count": count, "style": style, "model": model}
    given = {k: v for k, v in given.items() if v is not None}
    if cache:
        given["cache"] = True
    return given or None


def _read_prompts(file: Path) -> list[str]:
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except OSError as exc:
        err.print(f"[red]cannot read {escape(str(file))}[/]: {escape(exc.strerror or str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        err.print(f"[red]no prompts in {escape(str(file))}[/] (one a line)")
        raise typer.Exit(EXIT_USAGE)
    return prompts


# --- waiting, with a progress bar on stderr --------------------------------------------------


def _wait_showing(
    client: Client, ident: str, timeout: float, *, batch: bool = False
) -> JobRecord | BatchSummary:
    """`client.wait(ident)` with a bar on stderr: jobs done of a batch, or a job's progress."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        task: TaskID = bar.add_task("batch" if batch else ident[:12], total=None, detail="")

        def update(current: JobRecord | BatchSummary) -> None:
            if isinstance(current, BatchSummary):
                finals = sum(current.counts.get(s.value, 0) for s in JobStatus if s.terminal)
                counts = " · ".join(f"{n} {s}" for s, n in sorted(current.counts.items()) if n)
                detail = f"{finals}/{current.total} done · {counts}"
                bar.update(task, total=current.total, completed=finals, detail=detail)
                bar.update(task, description=f"batch {current.batch_id[:12]}")
            else:
                detail = f"{current.progress}% {current.status.value} · {current.stage.value}"
                bar.update(task, total=100, completed=current.progress, detail=detail)

        return client.wait(ident, timeout=timeout, on_update=update)


# --- output ----------------------------------------------------------------------------------


def _emit(document: dict[str, Any], as_json: bool, human: str) -> None:
    typer.echo(json.dumps(document, indent=2) if as_json else human)


def _show_final(final: JobRecord | BatchSummary, as_json: bool) -> int:
    """Print the finished job or batch; the exit code it means."""
    _show(final, as_json)
    jobs = final.jobs if isinstance(final, BatchSummary) else [final]
    ok = all(job.status is JobStatus.SUCCEEDED for job in jobs)
    return EXIT_OK if ok else EXIT_JOB_FAILED


def _show(current: JobRecord | BatchSummary, as_json: bool, out: Console | None = None) -> None:
    if as_json:
        typer.echo(current.model_dump_json(by_alias=True, indent=2))
        return
    lines: list[str] = []
    if isinstance(current, BatchSummary):
        counts = ", ".join(f"{n} {s}" for s, n in sorted(current.counts.items()) if n)
        lines.append(f"batch {current.batch_id}  {current.progress}%  {counts}")
        for job in current.jobs:
            lines += _job_lines(job, indent="  ")
    else:
        lines += _job_lines(current, indent="")
    for line in lines:
        if out is None:
            typer.echo(line)
        else:
            out.print(escape(line))


def _job_lines(job: JobRecord, indent: str) -> list[str]:
    head = f"{indent}{job.status.value:<9}  {job.id}  {job.prompt!r}"
    if not job.status.terminal:
        head += f"  {job.progress}% {job.stage.value}"
    lines = [head]
    for image in job.images:
        where = image.url or image.key
        lines.append(f"{indent}  image  {where}  {image.width}x{image.height}  {image.sha256}")
    if job.error is not None:
        lines.append(f"{indent}  error  {job.error.code}: {job.error.message}")
    return lines
