"""Image jobs: submit one prompt, read a job's status, download a stored image."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import RedirectResponse

from controller.audit import audit_targets
from controller.auth import JobsRead, JobsWrite
from controller.examples import GENERATE_ACCEPTED, JOB_RECORD
from controller.openapi import responses, success
from controller.ratelimit import LimitedRoute, limit, rate_limited
from controller.records import present
from controller.routes.webhooks import check_webhook
from controller.state import State
from controller.submission import Idempotency, IdempotencyKey, status_url
from semantest import routing
from semantest.errors import ImageNotFound, JobNotFound
from semantest.models import GenerateAccepted, GenerateRequest, JobRecord
from semantest.plans import Endpoint
from semantest.storage import EXTENSIONS, content_type_of, parse_key

router = APIRouter(prefix="/images", tags=["images"], route_class=LimitedRoute)


@router.post(
    "/generate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=GenerateAccepted,
    response_model_by_alias=True,
    responses=success(202, GENERATE_ACCEPTED, description="Queued.")
    | responses(401, 409, 413, 422, 503)
    | rate_limited(),
    dependencies=[limit(Endpoint.GENERATE)],
)
async def generate(
    body: GenerateRequest,
    caller: JobsWrite,
    state: State,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> GenerateAccepted:
    """Queue one prompt; poll `statusUrl` for the result.

    With an `Idempotency-Key`, repeating the same request returns the first answer (24 h).
    """
    check_webhook(body.webhook, state.settings)
    record = JobRecord(
        tenant=caller.tenant,
        provider=(wanted := routing.candidates(body.provider))[0],
        providers=wanted if len(wanted) > 1 else [],
        prompt=body.prompt,
        options=body.options,
        priority=body.priority,
        webhook=body.webhook,
        idempotency_key=idempotency_key,
    )
    answer = GenerateAccepted(
        job_id=record.id, status=record.status, status_url=status_url(state, record.id)
    )
    replay = await state.submitter.submit(
        [record],
        answer.model_dump(mode="json", by_alias=True),
        idempotency=await Idempotency.from_request(request, idempotency_key),
        tenant=caller.tenant,
    )
    if replay is not None:
        answer = GenerateAccepted.model_validate(replay.answer)
        audit_targets(request, jobIds=[answer.job_id], replay="idempotency")
        return answer
    audit_targets(request, jobIds=[answer.job_id])
    if record.cached:  # answered from the result cache: already final
        answer.status = record.status
    return answer


@router.get(
    "/status/{job_id}",
    response_model=JobRecord,
    response_model_by_alias=True,
    responses=success(200, JOB_RECORD, description="The job record.")
    | responses(401, 404, example_code="JOB_NOT_FOUND")
    | rate_limited(),
    dependencies=[limit(Endpoint.STATUS)],
)
async def job_status(job_id: str, caller: JobsRead, state: State) -> JobRecord:
    """The job record, image URLs filled; another tenant's job is indistinguishable from a
    missing one."""
    record = await state.jobs.get(job_id) if len(job_id) <= 64 else None
    if record is None or record.tenant != caller.tenant:
        raise JobNotFound(f"no job {job_id!r}")
    return present(record, state)


@router.get(
    # two segments, as keys are `<tenant>/<sha256>.<ext>`: `/images/batch`, `/images/generate`
    # and the like stay other routes' (405 for a wrong method, not a missing image)
    "/{tenant}/{name}",
    response_class=Response,
    responses={
        200: {"content": {ct: {} for ct in EXTENSIONS}, "description": "The image bytes."},
        302: {"description": "S3 storage: redirect to a presigned GET URL of the image."},
        304: {"description": "`If-None-Match` matched: the image did not change."},
        **responses(401, 404, example_code="IMAGE_NOT_FOUND"),
        **rate_limited(),
    },
    dependencies=[limit()],
)
async def image(
    tenant: str, name: str, request: Request, caller: JobsRead, state: State
) -> Response:
    """The stored image: its bytes (local storage) or a redirect to a presigned URL (S3). Keys
    are content addresses, so the ETag is the sha256."""
    key = f"{tenant}/{name}"
    tenant, digest, _ext = parse_key(key)
    if tenant != caller.tenant:
        raise ImageNotFound(f"no image {key!r}")
    etag = f'"{digest}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    signed = await state.storage.signed_url(key)
    if signed is not None:
        # The presigned URL expires; the redirect must not outlive it in a cache.
        ttl = state.settings.s3_presign_expiry_s // 2
        return RedirectResponse(signed, 302, headers={"Cache-Control": f"private, max-age={ttl}"})
    data = await state.storage.get(key)
    return Response(data, media_type=content_type_of(key), headers=headers)
