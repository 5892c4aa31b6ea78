"""Failure evidence of a job: every failed attempt's screenshot, DOM, console log and state.

Agents keep them under `<data>/artifacts/<jobId>/<attempt>/` (`agents/attempt.py`); records
name them `<attempt>/<file>`, and clients see URLs to the routes below, never server paths.
Another tenant's job is a missing one (404), as everywhere. The controller's sweeper deletes a
job's folder `SEMANTEST_ARTIFACT_RETENTION_H` hours after its last write
(`controller/scheduler.py`).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from controller.auth import JobsRead
from controller.openapi import responses, success
from controller.ratelimit import LimitedRoute, limit, rate_limited
from controller.state import AppState, State
from semantest.errors import JobNotFound, NotFound
from semantest.models import CamelModel, JobRecord

router = APIRouter(tags=["jobs"], route_class=LimitedRoute)

#: The evidence files an attempt may keep, and how they are served.
FILES = {
    "screenshot.png": ("screenshot", "image/png"),
    "dom.html": ("dom", "text/plain; charset=utf-8"),  # shown as text: never run as a page
    "console.log": ("console", "text/plain; charset=utf-8"),
    "state.json": ("state", "application/json"),
}
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ATTEMPT = re.compile(r"^[0-9]{1,3}$")


class Artifact(CamelModel):
    """One kept file of one failed attempt."""

    attempt: int
    #: `screenshot`, `dom`, `console` or `state`.
    name: str
    file: str
    url: str
    content_type: str
    bytes: int


class ArtifactList(CamelModel):
    """`GET /api/v1/jobs/{jobId}/artifacts`: every failed attempt's evidence, oldest first."""

    job_id: str
    artifacts: list[Artifact]


def artifact_url(state: AppState, job_id: str, relative: str) -> str:
    """Where a client downloads one artifact (`relative` is `<attempt>/<file>`)."""
    return f"{state.settings.controller_url}/api/v1/jobs/{job_id}/artifacts/{relative}"


def job_folder(state: AppState, job_id: str) -> Path:
    """The job's artifact folder."""
    return state.settings.data_dir / "artifacts" / job_id


async def _own_record(state: AppState, job_id: str, tenant: str) -> JobRecord:
    record = await state.jobs.get(job_id) if _JOB_ID.match(job_id) else None
    if record is None or record.tenant != tenant:
        raise JobNotFound(f"no job {job_id!r}")
    return record


_BASE = "http://127.0.0.1:8000/api/v1/jobs/0f3c2a9e8b7d4c1a9e2f6b5d4c3a2b1e/artifacts"
_LISTED = {
    "jobId": "0f3c2a9e8b7d4c1a9e2f6b5d4c3a2b1e",
    "artifacts": [
        {
            "attempt": 1,
            "name": "screenshot",
            "file": "screenshot.png",
            "url": f"{_BASE}/1/screenshot.png",
            "contentType": "image/png",
            "bytes": 18234,
        },
        {
            "attempt": 1,
            "name": "state",
            "file": "state.json",
            "url": f"{_BASE}/1/state.json",
            "contentType": "application/json",
            "bytes": 512,
        },
    ],
}


@router.get(
    "/jobs/{job_id}/artifacts",
    response_model=ArtifactList,
    response_model_by_alias=True,
    responses=success(200, _LISTED, description="Every failed attempt's evidence.")
    | responses(401, 404, example_code="JOB_NOT_FOUND")
    | rate_limited(),
    dependencies=[limit()],
)
async def list_artifacts(job_id: str, caller: JobsRead, state: State) -> ArtifactList:
    """Every failed attempt's evidence (screenshot, DOM snapshot, console log, the addon's
    last reported state), each with the URL that serves it; empty when no attempt failed or
    the evidence is past its retention."""
    await _own_record(state, job_id, caller.tenant)
    folder = job_folder(state, job_id)
    found: list[Artifact] = []
    if folder.is_dir():
        attempts = sorted((p for p in folder.iterdir() if _ATTEMPT.match(p.name)), key=_number)
        for attempt in attempts:
            for file, (name, media) in FILES.items():
                path = attempt / file
                if path.is_file():
                    found.append(
                        Artifact(
                            attempt=int(attempt.name),
                            name=name,
                            file=file,
                            url=artifact_url(state, job_id, f"{attempt.name}/{file}"),
                            content_type=media,
                            bytes=path.stat().st_size,
                        )
                    )
    return ArtifactList(job_id=job_id, artifacts=found)


def _number(path: Path) -> int:
    return int(path.name)


@router.get(
    "/jobs/{job_id}/artifacts/{attempt}/{file}",
    response_class=FileResponse,
    responses=success(
        200,
        '{"error": {"code": "CONTENT_REFUSED", "message": "…"}, "retryAfterS": null}',
        description="The file: a PNG screenshot, the DOM as text, the console log as text, or "
        "the addon's state as JSON.",
        media_type="application/octet-stream",
        schema={"type": "string", "format": "binary"},
    )
    | responses(401, 404, example_code="JOB_NOT_FOUND")
    | rate_limited(),
    dependencies=[limit()],
)
async def get_artifact(
    job_id: str, attempt: str, file: str, caller: JobsRead, state: State
) -> FileResponse:
    """One artifact's bytes (a DOM snapshot is served as text, never as a page)."""
    await _own_record(state, job_id, caller.tenant)
    kind = FILES.get(file)
    path = job_folder(state, job_id) / attempt / file
    if kind is None or not _ATTEMPT.match(attempt) or not path.is_file():
        raise NotFound(f"no artifact {attempt}/{file} of job {job_id!r}")
    return FileResponse(
        path,
        media_type=kind[1],
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"},
    )


def sweep(root: Path, retention_h: int, now: float | None = None) -> list[str]:
    """Delete the artifact folders under `root` (one per job) not written to for `retention_h`
    hours; the ids of the jobs whose evidence went. 0 keeps everything."""
    if retention_h <= 0 or not root.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - retention_h * 3600
    gone = []
    for job in root.iterdir():
        try:
            newest = max(
                [job.stat().st_mtime] + [p.stat().st_mtime for p in job.rglob("*")], default=0
            )
        except FileNotFoundError:  # another controller swept it meanwhile
            continue
        if job.is_dir() and _JOB_ID.match(job.name) and newest < cutoff:
            shutil.rmtree(job, ignore_errors=True)
            gone.append(job.name)
    return gone
