"""Records as clients see them: stored records carry image keys, served ones carry URLs.

Every route that returns a job record passes it through `present` (or `present_all`), so one
stored record serves local, S3 and CDN URLs alike and a storage move never rewrites records.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.state import AppState
from semantest.models import JobRecord
from semantest.storage import Storage

#: Job and batch ids as the API issues them: query filters refuse anything else, "" too.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def image_url(storage: Storage, key: str, controller_url: str) -> str:
    """Where a client downloads a stored image: the CDN when one fronts the storage, else the
    controller (which serves local bytes or redirects to a presigned URL)."""
    return storage.public_url(key) or f"{controller_url}/api/v1/images/{key}"


def present(record: JobRecord, state: AppState) -> JobRecord:
    """A copy of `record` with every image's `url` filled for this deployment, and its
    failure evidence as URLs (stored as `<attempt>/<file>`, never a server path)."""
    if not record.images and not record.artifacts and not record.attempt_history:
        return record
    base = state.settings.controller_url
    images = [
        image.model_copy(update={"url": image_url(state.storage, image.key, base)})
        for image in record.images
    ]
    history = [
        entry.model_copy(update={"evidence": _evidence_urls(record.id, entry.evidence, base)})
        for entry in record.attempt_history
    ]
    return record.model_copy(
        update={
            "images": images,
            "artifacts": _evidence_urls(record.id, record.artifacts, base),
            "attempt_history": history,
        }
    )


def _evidence_urls(job_id: str, kept: dict[str, str], base: str) -> dict[str, str]:
    """`{name: <attempt>/<file>}` as URLs of `GET /api/v1/jobs/{jobId}/artifacts/...`.

    Records written before evidence was kept per attempt hold a server path: only the file
    name is shown then (no path leaves the server), under the route's attempt `0`.
    """
    out = {}
    for name, where in kept.items():
        relative = (
            where if "/" in where and not where.startswith("/") else f"0/{where.rsplit('/', 1)[-1]}"
        )
        out[name] = f"{base}/api/v1/jobs/{job_id}/artifacts/{relative}"
    return out


def present_all(records: Iterable[JobRecord], state: AppState) -> list[JobRecord]:
    """`present` for each record, in order."""
    return [present(record, state) for record in records]
