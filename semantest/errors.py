"""Every error Semantest reports, as one class hierarchy mapped to the API's error envelope.

::

    SemantestError                       (500 INTERNAL_ERROR)
    ├── ValidationError                  422 VALIDATION_ERROR  (details name each field)
    ├── Unauthorized                     401 UNAUTHORIZED
    ├── Forbidden                        403 FORBIDDEN
    │   └── DomainNotAllowed             403 DOMAIN_NOT_ALLOWED
    ├── NotFound                         404 NOT_FOUND
    │   ├── JobNotFound                  404 JOB_NOT_FOUND
    │   ├── AddonNotFound                404 ADDON_NOT_FOUND
    │   └── ImageNotFound                404 IMAGE_NOT_FOUND
    ├── Conflict                         409 CONFLICT
    ├── PayloadTooLarge                  413 PAYLOAD_TOO_LARGE
    ├── RateLimited                      429 RATE_LIMITED      (+ Retry-After)
    ├── Unavailable                      503 UNAVAILABLE       (+ Retry-After)
    └── JobFailure                       a job's own `error` (never an HTTP status)
        ├── GenerationFailed             GENERATION_FAILED, not retryable (bad output; with its
        │                                code: CONTENT_REFUSED for a refusal)
        └── RetryableFailure             retryable: provider timeout, agent crash, bridge loss

The controller has one exception handler that turns any `SemantestError` into
`{"error": {"code", "message", "details", "requestId"}}` with `status` and `headers()`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar


class JobErrorCode(str, Enum):
    """Every code a job's `error.code` can hold: the kernel's one list.

    Addons throw these names (`SemantestAddon.error(code, …)`); the bridge protocol's JSON
    Schema exports the list (`extension/protocol_schema.json`, `$defs.JobErrorCode`), and
    README's "Error codes" says when each happens and whether it is retried.
    """

    #: No usable image: answered without one, or the image is broken, too big, not an image.
    GENERATION_FAILED = "GENERATION_FAILED"
    #: The provider refused the prompt (content policy): not retried.
    CONTENT_REFUSED = "CONTENT_REFUSED"
    #: The provider's rate-limit notice: retried after the wait it shows, on another slot.
    PROVIDER_RATE_LIMITED = "PROVIDER_RATE_LIMITED"
    #: The provider's session is gone: the slot is parked, the job retried on another slot.
    PROVIDER_LOGGED_OUT = "PROVIDER_LOGGED_OUT"
    #: The provider answered with a server or network error.
    PROVIDER_ERROR = "PROVIDER_ERROR"
    #: No result within the job timeout.
    TIMEOUT = "TIMEOUT"
    #: The agent died mid-job (its heartbeat lease ran out), or a chat's tab is gone.
    AGENT_LOST = "AGENT_LOST"
    #: A crash in our own code.
    AGENT_ERROR = "AGENT_ERROR"
    #: The finished reply holds no image.
    NO_IMAGE = "NO_IMAGE"
    #: The reply's image did not load, or could not be downloaded.
    IMAGE_LOAD_FAILED = "IMAGE_LOAD_FAILED"
    CAPTURE_FAILED = "CAPTURE_FAILED"
    #: The page did not look or behave as the addon expects.
    PAGE_CHANGED = "PAGE_CHANGED"
    COMPOSER_STUCK = "COMPOSER_STUCK"
    ADDON_BUSY = "ADDON_BUSY"
    #: The addon's driver is broken (its detectState() threw, or it threw without a code).
    ADDON_ERROR = "ADDON_ERROR"
    #: No addon answered in the slot's tab, or the extension's bridge is down.
    ADDON_NOT_READY = "ADDON_NOT_READY"
    BRIDGE_DOWN = "BRIDGE_DOWN"
    #: A chat message on an addon that cannot hold a conversation, or whose chat ended.
    CHAT_UNSUPPORTED = "CHAT_UNSUPPORTED"
    CHAT_ENDED = "CHAT_ENDED"
    #: The job was canceled (a status more than an error; the addon's answer to `job.cancel`).
    CANCELED = "CANCELED"


#: Codes addons of earlier versions throw, and the code each means now.
LEGACY_JOB_CODES = {
    "RATE_LIMITED": JobErrorCode.PROVIDER_RATE_LIMITED.value,
    "LOGGED_OUT": JobErrorCode.PROVIDER_LOGGED_OUT.value,
}


class SemantestError(Exception):
    """Base of every error we raise on purpose."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers this error carries (e.g. Retry-After)."""
        return {}

    def envelope(self, request_id: str | None = None) -> dict[str, Any]:
        """The JSON body of the error envelope."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
                "requestId": request_id,
            }
        }


class ValidationError(SemantestError):
    """Bad input; `details` holds `{"field": "...", "reason": "..."}` per problem."""

    code = "VALIDATION_ERROR"
    status = 422


class Unauthorized(SemantestError):
    """No credentials, or credentials we do not know."""

    code = "UNAUTHORIZED"
    status = 401


class Forbidden(SemantestError):
    """Known caller, not allowed to do this."""

    code = "FORBIDDEN"
    status = 403


class DomainNotAllowed(Forbidden):
    """A page URL outside the addon allowlist."""

    code = "DOMAIN_NOT_ALLOWED"


class NotFound(SemantestError):
    """Generic missing resource."""

    code = "NOT_FOUND"
    status = 404


class JobNotFound(NotFound):
    """No job with that id for this tenant."""

    code = "JOB_NOT_FOUND"


class AddonNotFound(NotFound):
    """No addon with that id (or version)."""

    code = "ADDON_NOT_FOUND"


class ImageNotFound(NotFound):
    """No stored image under that key for this tenant."""

    code = "IMAGE_NOT_FOUND"


class Conflict(SemantestError):
    """The request conflicts with the resource's current state."""

    code = "CONFLICT"
    status = 409


class PayloadTooLarge(SemantestError):
    """Request body over the limit."""

    code = "PAYLOAD_TOO_LARGE"
    status = 413


class _RetryAfter(SemantestError):
    def __init__(
        self, message: str, retry_after_s: int = 1, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message, details)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class RateLimited(_RetryAfter):
    """Too many requests for this tenant and endpoint."""

    code = "RATE_LIMITED"
    status = 429


class Unavailable(_RetryAfter):
    """No capacity right now (queue full, Redis down)."""

    code = "UNAVAILABLE"
    status = 503


class JobFailure(SemantestError):
    """A job could not produce its images; recorded in the job's `error`, not an HTTP reply."""

    retryable: ClassVar[bool] = False

    def __init__(
        self, message: str, code: str | None = None, *, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        code = code or self.code
        self.job_code = LEGACY_JOB_CODES.get(code, code)
        #: The wait the provider asked for (a rate-limit notice's), in seconds.
        self.retry_after_s = retry_after_s


class GenerationFailed(JobFailure):
    """The provider refused or produced nothing usable: fail at once, no retry."""

    code = "GENERATION_FAILED"


class RetryableFailure(JobFailure):
    """A failure another attempt may cure: provider timeout, agent crash, lost bridge."""

    code = "AGENT_ERROR"
    retryable = True
