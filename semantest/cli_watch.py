"""`semantest watch ID`: a job's or a batch's events, printed as they happen, until it is final.

One line per event on stdout (time, job, status, progress, stage, and the agent or error),
or with `--json` one JSON object per line (`semantest.live.StreamEvent`, camelCase) for
scripts; `--since` resumes after an event's `id`. The exit codes are the job commands'
(semantest/cli_jobs.py): 0 when every job succeeded, 1 when one failed or was canceled.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

# The job commands' connection options, error reporting and job-or-batch lookup, so `watch`
# answers exactly as they do.
from semantest.cli_jobs import (
    EXIT_JOB_FAILED,
    EXIT_OK,
    ApiKey,
    Url,
    _client,
    _job_or_batch,
)
from semantest.client_calls import DEFAULT_URL
from semantest.live import StreamEvent
from semantest.models import BatchSummary, JobStatus


def watch(
    ident: Annotated[str, typer.Argument(metavar="ID", help="A job id or a batch id.")],
    since: Annotated[
        str | None, typer.Option(help="Resume after this event id (the id of a --json line).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per event (scripts).")
    ] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Print a job's or a batch's events as they happen, until it is final.

    One line per event (time, job, status, progress, stage, agent or error); exit 1 if a job
    failed or was canceled.

    Environment: SEMANTEST_URL (the controller, default http://127.0.0.1:8000) and
    SEMANTEST_API_KEY, else SEMANTEST_ADMIN_KEY, when --url and --api-key are not given."""
    with _client(url, api_key) as client:
        for event in client.stream(ident, since=since):
            typer.echo(event.model_dump_json(by_alias=True) if as_json else _line(event))
        final = _job_or_batch(ident, client.status, client.batch_status)
    jobs = final.jobs if isinstance(final, BatchSummary) else [final]
    ok = all(job.status is JobStatus.SUCCEEDED for job in jobs)
    raise typer.Exit(EXIT_OK if ok else EXIT_JOB_FAILED)


def _line(event: StreamEvent) -> str:
    at = time.strftime("%H:%M:%S", time.localtime(event.at))
    line = f"{at}  {event.job_id[:12]}  {event.status.value:<9} {event.progress:>3}%  "
    line += event.stage.value
    if "error" in event.detail:
        line += f"  error {event.detail['error']}"
    elif "agent" in event.detail:
        line += f"  {event.detail['agent']} #{event.detail.get('attempt', '?')}"
    return line
