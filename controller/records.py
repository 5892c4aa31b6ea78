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
    """A copy of `record` with every image's `url` filled for this deployment."""
    if not record.images:
        return record
    base = state.settings.controller_url
    images = [
        image.model_copy(update={"url": image_url(state.storage, image.key, base)})
        for image in record.images
    ]
    return record.model_copy(update={"images": images})


def present_all(records: Iterable[JobRecord], state: AppState) -> list[JobRecord]:
    """`present` for each record, in order."""
    return [present(record, state) for record in records]
